//! One pod's worker: everything about one pod happens here, one step at a time. A step
//! reads the pod and its `NetworkConfiguration` from the watches, resolves the pod's netns,
//! and then either updates the desired state of the sandbox being served, or (new sandbox:
//! first sight, pod restart, node reboot) releases the old one and serves the new one
//! after proving it holds the pod's IP.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api::conditions::{self, APPLIED, DEGRADED};
use api::{NetworkConfiguration, NetworkConfigurationStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::Api;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::decide::{self, Lookup, PodPlan, Sandbox};
use super::forward::ClusterBackend;
use super::report;
use super::state::PodState;
use super::{Context, Key};
use crate::backoff::Backoff;
use crate::cri::{PodRef, ResolveError, ResolvedNetns};
use crate::engine::PodNetwork;
use crate::owned::Owned;
use crate::podapi::{Desired, PodServer, ServerOptions};

/// The sandbox being served.
struct Served {
    key: Key,
    uid: String,
    sandbox: Sandbox,
    server: Arc<PodServer>,
    desired: watch::Sender<Desired>,
    poke: Arc<Notify>,
    reporter: tokio::task::JoinHandle<()>,
}

impl Served {
    /// CNI DEL of every attachment nes made in this sandbox (the pod or its sandbox went):
    /// their addresses go back to their IPAM. Never on an agent shutdown.
    async fn detach_all(&self) {
        if let Some(attacher) = self.server.network().attacher() {
            attacher.detach_all().await;
        }
    }

    /// Closes every socket bound in the netns; the kernel is left as it is.
    async fn release(self, ctx: &Context) {
        ctx.metrics.pods_served.dec();
        ctx.served.send_if_modified(|served| {
            let ours = served
                .get(&self.key)
                .is_some_and(|s| Arc::ptr_eq(s, &self.server));
            ours && served.remove(&self.key).is_some()
        });
        self.server.stop().await;
        let _ = self.reporter.await;
    }
}

/// What the worker does next.
enum Next {
    /// Nothing more to do until something changes (or the resync).
    Idle,
    /// Try again after a delay (a failure, or a pod not ready to pair yet).
    Retry,
    /// The pod is not ours any more.
    Done,
}

/// Runs until the pod is released or `stop` (agent shutdown) is cancelled.
pub async fn run(ctx: Arc<Context>, key: Key, wake: Arc<Notify>, stop: CancellationToken) {
    let mut served: Option<Served> = None;
    let mut absent: Option<Lookup<'static>> = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let delay = match step(&ctx, &key, &mut served, &mut absent).await {
            Next::Done => break,
            Next::Idle => {
                backoff.reset();
                ctx.opts.resync
            }
            Next::Retry => backoff.next_delay(),
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
    if let Some(s) = served.take() {
        s.release(&ctx).await;
    }
}

/// One step, phase by phase: which pod, which sandbox, then either the new desired state
/// for the sandbox being served or a newly opened, proven netns to serve. `absent` is what
/// the API server said about a configuration that left the watch.
async fn step(
    ctx: &Arc<Context>,
    key: &Key,
    served: &mut Option<Served>,
    absent: &mut Option<Lookup<'static>>,
) -> Next {
    let (pod, uid, ips) = match serve_which(ctx, key, served).await {
        Ok(p) => p,
        Err(next) => {
            if matches!(next, Next::Done) {
                let pod = super::upgrade_key(key);
                ctx.upgrade.send_if_modified(|c| c.gone(&pod));
            }
            return next;
        }
    };
    let ready = super::upgrade::pod_ready(&pod);
    let upgrade_pod = super::upgrade_key(key);
    ctx.upgrade
        .send_if_modified(|c| c.readiness(&upgrade_pod, ready));
    let pod_ref = PodRef::new(&uid, key.namespace.clone().unwrap_or_default(), &key.name);
    let resolved = match resolve(ctx, &pod_ref, served).await {
        Ok(r) => r,
        Err(next) => return next,
    };
    let sandbox = Sandbox::new(&resolved.sandbox_id, &resolved.identity);
    if let Some(s) = served.as_ref().filter(|s| s.sandbox == sandbox) {
        let current = s.desired.borrow().clone();
        let (desired, next) = desired_for(ctx, &pod, &sandbox, Some(&current), false, absent).await;
        announce_refusal(ctx, &pod, Some(&current), &desired).await;
        s.desired.send_if_modified(|current| {
            let changed = *current != desired;
            *current = desired;
            changed
        });
        s.poke.notify_one();
        return next;
    }
    if let Some(s) = served.take() {
        info!(
            old = %s.sandbox.id, new = %sandbox.id,
            "new sandbox: re-applying the whole configuration and re-binding @nes there"
        );
        s.detach_all().await;
        s.release(ctx).await;
    }
    let candidate = Candidate {
        key,
        pod: &pod,
        uid: &uid,
        ips: &ips,
        sandbox,
    };
    let (net, path) = match candidate.open(ctx, &resolved).await {
        Ok(opened) => opened,
        Err(next) => return next,
    };
    let owned = ctx.states.owned_in(&uid, &candidate.sandbox);
    // After a restart the CR may not be known yet: a pod with a record holds, not wipes.
    let owns = owned != Owned::default();
    let (desired, next) = desired_for(ctx, &pod, &candidate.sandbox, None, owns, absent).await;
    announce_refusal(ctx, &pod, None, &desired).await;
    *served = Some(candidate.serve(ctx, net, &path, owned, desired));
    next
}

/// The desired state for the pod, and what the worker does next: retry (with backoff) when
/// the API server could not say where a configuration that left the watch went.
async fn desired_for(
    ctx: &Context,
    pod: &Pod,
    sandbox: &Sandbox,
    current: Option<&Desired>,
    owns_something: bool,
    absent: &mut Option<Lookup<'static>>,
) -> (Desired, Next) {
    let key = &ObjectRef::from_obj(pod);
    let conf = ctx.conf(key);
    let lookup = match (conf.as_deref(), *absent) {
        (Some(conf), _) => {
            *absent = None;
            Lookup::InWatch(conf)
        }
        (None, Some(known)) => known,
        // Nothing to keep: no need to ask (next_desired gives the empty spec either way).
        (None, None) if !decide::holds_something(current, owns_something) => Lookup::Deleted,
        (None, None) => {
            let found = lookup_by_name(ctx, key).await;
            // Asked once per disappearance; a failed lookup is asked again on the retry.
            if !matches!(found, Lookup::Unknown) {
                *absent = Some(found);
            }
            found
        }
    };
    let next = match lookup {
        Lookup::Unknown => Next::Retry,
        _ => Next::Idle,
    };
    // Defence in depth: a CR written directly (kubectl, another controller) is checked
    // against the admin policies here, before the engine sees it.
    // The pod's NPWG annotation declares attachments too; nes's own (its cache for this
    // sandbox) are told apart from those the CNI made.
    let ours = crate::cni::cache::Cache::new(&ctx.opts.cni.cache_dir)
        .attached(&sandbox.id)
        .into_iter()
        .map(|r| r.if_name)
        .collect();
    let declared = decide::with_annotated(
        decide::next_desired(lookup, current, owns_something),
        current,
        super::netstatus::annotated(pod, &ours),
    );
    let desired = crate::policy::gate_apply_attaching(
        declared,
        current,
        &ctx.governing(key),
        &ctx.opts.host_access,
        key.namespace.as_deref().unwrap_or_default(),
        ctx.opts.allow_host_cni,
    );
    (desired, next)
}

/// An Event on the pod when the admin policy newly refuses its configuration (the CR's
/// status says it too, through the pod server's Degraded condition).
async fn announce_refusal(ctx: &Arc<Context>, pod: &Pod, before: Option<&Desired>, now: &Desired) {
    if let Some(event) = decide::refusal_event(before, now) {
        warn!(reason = event.reason, message = %event.note, "the admin policy refuses the configuration; nothing new is applied");
        report::publish(ctx, pod, &event).await;
    }
}

/// Asks the API server for the pod's configuration by name, once it left the node's watch:
/// a label-selected watch sees a delete and a relabel alike, a GET tells them apart.
async fn lookup_by_name(ctx: &Context, key: &Key) -> Lookup<'static> {
    let namespace = key.namespace.as_deref().unwrap_or_default();
    let api = Api::<NetworkConfiguration>::namespaced(ctx.client.clone(), namespace);
    match tokio::time::timeout(ctx.opts.api_timeout, api.get_opt(&key.name)).await {
        Ok(Ok(None)) => {
            info!("the pod's NetworkConfiguration was deleted: removing what nes applied for it");
            Lookup::Deleted
        }
        Ok(Ok(Some(_))) => {
            warn!("the pod's NetworkConfiguration left this node's watch but exists: keeping what was applied");
            Lookup::Elsewhere
        }
        Ok(Err(error)) => {
            warn!(%error, "cannot ask whether the pod's NetworkConfiguration was deleted; keeping what was applied");
            Lookup::Unknown
        }
        Err(_) => {
            warn!(after = ?ctx.opts.api_timeout, "asking whether the pod's NetworkConfiguration was deleted timed out; keeping what was applied");
            Lookup::Unknown
        }
    }
}

/// The pod to serve (and its UID and IPs), or what to do instead: release it (gone, moved,
/// opted out), wait for it. A new pod under the same name releases the old one first.
async fn serve_which(
    ctx: &Arc<Context>,
    key: &Key,
    served: &mut Option<Served>,
) -> Result<(Arc<Pod>, String, Vec<IpAddr>), Next> {
    let pod = ctx.pods.get(key);
    let plan = match pod.as_deref() {
        Some(pod) => decide::pod_plan(pod, &ctx.opts.node),
        None => PodPlan::Release("the pod is gone"),
    };
    let (uid, ips) = match plan {
        PodPlan::Release(why) => {
            if let Some(s) = served.take() {
                info!(reason = why, "releasing the pod's sockets and state");
                ctx.states.remove(&s.uid);
                if decide::pod_leaving(pod.as_deref()) {
                    s.detach_all().await;
                }
                s.release(ctx).await;
            }
            return Err(Next::Done);
        }
        PodPlan::Wait(why) => {
            tracing::debug!(reason = why, "waiting");
            return Err(Next::Retry);
        }
        PodPlan::Serve { uid, ips } => (uid, ips),
    };
    let Some(pod) = pod else {
        return Err(Next::Done);
    };
    if served.as_ref().is_some_and(|s| s.uid != uid) {
        // Same name, new pod (a StatefulSet pod recreated): nothing of the old one holds.
        if let Some(s) = served.take() {
            ctx.states.remove(&s.uid);
            s.detach_all().await;
            s.release(ctx).await;
        }
    }
    Ok((pod, uid, ips))
}

/// The pod's sandbox and netns as the runtime says; a sandbox that is gone releases what
/// was bound in it.
async fn resolve(
    ctx: &Arc<Context>,
    pod_ref: &PodRef,
    served: &mut Option<Served>,
) -> Result<ResolvedNetns, Next> {
    match tokio::time::timeout(ctx.opts.resolve_timeout, ctx.resolver.resolve(pod_ref)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(error)) => {
            if sandbox_gone(&error) {
                if let Some(s) = served.take() {
                    info!(%error, "the pod's sandbox is gone: closing everything bound in its netns");
                    s.release(ctx).await;
                }
            } else {
                warn!(%error, "cannot resolve the pod's network namespace");
            }
            Err(Next::Retry)
        }
        Err(_) => {
            warn!(after = ?ctx.opts.resolve_timeout, "resolving the pod's network namespace timed out");
            Err(Next::Retry)
        }
    }
}

/// A sandbox not served yet.
struct Candidate<'a> {
    key: &'a Key,
    pod: &'a Arc<Pod>,
    uid: &'a str,
    ips: &'a [IpAddr],
    sandbox: Sandbox,
}

impl Candidate<'_> {
    /// Opens the sandbox's netns and proves it is the pod's: the same file the runtime
    /// named, holding the pod's IP. Configure the right netns or none.
    async fn open(
        &self,
        ctx: &Arc<Context>,
        resolved: &ResolvedNetns,
    ) -> Result<(Arc<PodNetwork>, String), Next> {
        let (sandbox, uid) = (&self.sandbox, self.uid);
        let Some(path) = resolved.identity.path.clone() else {
            warn!(sandbox = %sandbox.id, "the runtime gave no netns path");
            return Err(Next::Retry);
        };
        let net = match PodNetwork::open(&path, &ctx.opts.host_netns).await {
            Ok(net) => Arc::new(
                net.with_host_access(ctx.opts.host_access.clone())
                    .with_attacher(self.attacher(ctx, &path)),
            ),
            Err(error @ crate::error::Error::HostNetns { .. }) => {
                warn!(%error, "refusing a pod netns that is the node's own");
                ctx.resolver.invalidate(uid);
                refuse(ctx, self.key, self.pod, "HostNetns", &error.to_string()).await;
                return Err(Next::Retry);
            }
            Err(error) => {
                warn!(%error, netns = %path, "cannot open the pod's network namespace");
                ctx.resolver.invalidate(uid);
                return Err(Next::Retry);
            }
        };
        if Sandbox::new(&resolved.sandbox_id, net.identity()) != *sandbox {
            warn!(netns = %path, "the netns file changed while opening it; resolving again");
            ctx.resolver.invalidate(uid);
            return Err(Next::Retry);
        }
        let holds = match net.observe().await {
            Ok(observed) => decide::holds_pod_ip(&observed.addresses, self.ips),
            Err(error) => {
                warn!(%error, netns = %path, "cannot read the pod's network namespace");
                return Err(Next::Retry);
            }
        };
        if !holds {
            let message = format!(
                "netns {path} of sandbox {} does not hold any of the pod's IPs {:?}; nothing was written",
                sandbox.id, self.ips
            );
            warn!(%message, "refusing a netns that is not the pod's");
            ctx.resolver.invalidate(uid);
            refuse(ctx, self.key, self.pod, "NetnsMismatch", &message).await;
            return Err(Next::Retry);
        }
        Ok((net, path))
    }

    /// The pod's attacher: networks from the cluster's NADs, results kept under the
    /// sandbox's id (libcni's key, as the runtime and Multus use it). Whether the policies
    /// allow attaching is decided before the engine sees a spec (the desired state's gate).
    fn attacher(&self, ctx: &Context, netns: &str) -> crate::cni::attacher::Attacher {
        crate::cni::attacher::Attacher {
            opts: ctx.opts.cni.clone(),
            pod: crate::cni::keep::PodRef {
                namespace: self.key.namespace.clone().unwrap_or_default(),
                name: self.key.name.clone(),
                uid: self.uid.to_string(),
                sandbox: self.sandbox.id.clone(),
                netns: netns.into(),
            },
            allowed: ctx.opts.allow_host_cni,
            networks: super::nads::source(&ctx.nads),
        }
    }

    /// Serves the proven netns: records it, starts its pod server and its status reporter.
    fn serve(
        self,
        ctx: &Arc<Context>,
        net: Arc<PodNetwork>,
        path: &str,
        owned: Owned,
        desired: Desired,
    ) -> Served {
        let (key, uid, sandbox) = (self.key, self.uid.to_string(), self.sandbox);
        let state = PodState {
            sandbox: sandbox.clone(),
            owned: owned.clone(),
        };
        if let Err(error) = ctx.states.save(&uid, &state) {
            warn!(%error, "cannot persist the pod record");
        }
        let backend = Arc::new(ClusterBackend {
            namespace: key.namespace.clone().unwrap_or_default(),
            pod: key.name.clone(),
            uid: uid.clone(),
            sandbox: sandbox.clone(),
            forwarder: ctx.forwarder.clone(),
            confs: ctx.confs.clone(),
            states: ctx.states.clone(),
            metrics: ctx.metrics.clone(),
            subscriptions: ctx.subscriptions.clone(),
            problem: Default::default(),
        });
        let conditions = previous_conditions(ctx, key, &sandbox);
        let generation = ctx.conf(key).and_then(|c| c.metadata.generation);
        let converged = super::upgrade::converged_at_start(&conditions, generation);
        let upgrade_pod = super::upgrade_key(key);
        ctx.upgrade
            .send_if_modified(|c| c.served(&upgrade_pod, converged));
        let (desired_tx, desired_rx) = watch::channel(desired);
        let server = PodServer::start(
            &key.name,
            net,
            desired_rx,
            owned,
            backend,
            ServerOptions {
                keeper: ctx.opts.keeper.clone(),
                node: Some(ctx.opts.node.clone()),
                conditions,
                policy: policy_source(ctx, key),
                limits: Default::default(),
            },
        );
        info!(sandbox = %sandbox.id, netns = %path, "serving the pod");
        ctx.metrics.pods_served.inc();
        ctx.served.send_modify(|served| {
            served.insert(key.clone(), server.clone());
        });
        let poke = Arc::new(Notify::new());
        let reporter = tokio::spawn(
            report::follow(
                ctx.clone(),
                key.clone(),
                self.pod.clone(),
                server.clone(),
                poke.clone(),
            )
            .in_current_span(),
        );
        Served {
            key: key.clone(),
            uid,
            sandbox,
            server,
            desired: desired_tx,
            poke,
            reporter,
        }
    }
}

/// The pod's governing policies as the watches know them at each request. Weak: the
/// context holds the pod servers.
fn policy_source(ctx: &Arc<Context>, key: &Key) -> crate::policy::PolicySource {
    let (ctx, key) = (Arc::downgrade(ctx), key.clone());
    crate::policy::PolicySource(Arc::new(move || match ctx.upgrade() {
        Some(ctx) => ctx.governing(&key),
        None => api::policy::Governing::Unknown("the agent is stopping".into()),
    }))
}

/// The conditions the CR's status shows for this very netns (kept across an agent restart).
fn previous_conditions(
    ctx: &Context,
    key: &Key,
    sandbox: &Sandbox,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    ctx.conf(key)
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .filter(|s| {
            s.netns
                .as_ref()
                .is_some_and(|n| n.inode == sandbox.inode && n.dev == sandbox.dev)
        })
        .map(|s| s.conditions.clone())
        .unwrap_or_default()
}

/// The runtime says the pod has no live sandbox: whatever was bound in the old one goes.
fn sandbox_gone(error: &ResolveError) -> bool {
    matches!(
        error,
        ResolveError::PodNotFound { .. }
            | ResolveError::NoReadySandbox { .. }
            | ResolveError::NetnsUnreadable { .. }
            | ResolveError::HostNetwork { .. }
    )
}

/// A pod nes cannot serve: Degraded on its CR (when it has one) and an Event on the pod.
async fn refuse(ctx: &Arc<Context>, key: &Key, pod: &Pod, reason: &'static str, message: &str) {
    let event = decide::KubeEvent {
        warning: true,
        reason,
        note: message.to_string(),
    };
    report::publish(ctx, pod, &event).await;
    let Some(conf) = ctx.conf(key) else {
        return;
    };
    let generation = conf.metadata.generation.unwrap_or(0);
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut status = conf.status.clone().unwrap_or_default();
    conditions::set(
        &mut status.conditions,
        APPLIED,
        false,
        reason,
        message,
        generation,
        now,
    );
    conditions::set(
        &mut status.conditions,
        DEGRADED,
        true,
        reason,
        message,
        generation,
        now,
    );
    let status = NetworkConfigurationStatus {
        observed_generation: Some(generation),
        node: Some(ctx.opts.node.clone()),
        ..status
    };
    if conf.status.as_ref() != Some(&status) {
        report::patch_status(ctx, key, &status).await;
    }
}
