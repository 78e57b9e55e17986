//! The in-cluster agent (the `nes-agent` default mode): watches the labelled Pods of its
//! node and the `NetworkConfiguration`s labelled with it; for each pod it resolves the
//! netns through the container runtime, proves the pairing by the pod's IP, keeps the
//! desired state applied with the engine, serves `@nes` inside the pod's netns (writes
//! forwarded to the cliserver) and reports status on the CR. One worker per pod serialises
//! that pod's work; pods run in parallel; every external call has a deadline.

pub mod cares;
pub mod decide;
pub mod forward;
pub mod nads;
pub mod netstatus;
pub mod probe;
pub mod report;
pub mod state;
pub mod upgrade;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::policy::Governing;
use api::NetworkConfiguration;
use common::policy_view::PolicyView;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::cri::{NetnsResolver, SandboxEvent};
use crate::error::{Error, Result};
use crate::watch::KeeperOptions;
use forward::{ForwardOptions, Forwarder};
use state::StateDir;

/// Field manager of every write the agent makes to the API server.
pub const FIELD_MANAGER: &str = "nes-agent";

/// How the cluster agent runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub node: String,
    /// The node's network namespace (veth peers and host parents live there).
    pub host_netns: PathBuf,
    /// What pods may do in the host namespace (nothing unless allowed).
    pub host_access: api::host::HostAccess,
    pub state_dir: PathBuf,
    pub keeper: KeeperOptions,
    pub forward: ForwardOptions,
    /// Deadline of each API server call (status patches, Events, lookups by name).
    pub api_timeout: Duration,
    /// Deadline of each netns resolution.
    pub resolve_timeout: Duration,
    /// Status patches of one pod: this many at once, then one per `status_interval`.
    pub status_burst: u32,
    pub status_interval: Duration,
    /// Every pod is re-resolved at least this often, to catch what events missed.
    pub resync: Duration,
    /// `/healthz`, `/readyz`, `/metrics`; none in tests.
    pub probe_addr: Option<std::net::SocketAddr>,
    /// How long serving waits for the admin policies' first list; after it, pods are
    /// served but nothing new is applied (Degraded `PolicyUnavailable`) until they list.
    pub policy_list_timeout: Duration,
    /// CNI attachments: where plugins are and results are kept (networks are the cluster's
    /// NetworkAttachmentDefinitions).
    pub cni: crate::cni::CniOptions,
    /// The node allows CNI attachments (`--allow-host-cni`); the policies must too.
    pub allow_host_cni: bool,
    /// The agent's own pod, on which it writes its upgrade report; none: no report.
    pub own_pod: Option<upgrade::OwnPod>,
    /// How long after its first upgrade report the agent still writes changed counts.
    pub upgrade_window: Duration,
}

impl Options {
    pub fn new(node: impl Into<String>, forward: ForwardOptions) -> Self {
        Self {
            node: node.into(),
            host_netns: "/proc/self/ns/net".into(),
            host_access: api::host::HostAccess::deny_all(),
            state_dir: "/var/lib/nes".into(),
            keeper: KeeperOptions::default(),
            forward,
            api_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(10),
            status_burst: 4,
            status_interval: Duration::from_secs(1),
            resync: Duration::from_secs(60),
            probe_addr: None,
            policy_list_timeout: Duration::from_secs(30),
            cni: Default::default(),
            allow_host_cni: false,
            own_pod: None,
            upgrade_window: Duration::from_secs(600),
        }
    }
}

/// What every pod worker shares.
pub struct Context {
    pub opts: Options,
    pub client: Client,
    pub resolver: Arc<dyn NetnsResolver>,
    pub pods: Store<Pod>,
    pub confs: Store<NetworkConfiguration>,
    pub forwarder: Arc<Forwarder>,
    pub states: StateDir,
    pub recorder: Recorder,
    pub metrics: Arc<probe::Metrics>,
    /// The pod servers of this node; workers keep it current.
    pub served: tokio::sync::watch::Sender<cares::ServedPods>,
    pub subscriptions: Arc<cares::Subscriptions>,
    /// Cancelled once both watches have listed.
    pub ready: CancellationToken,
    /// The admin policies and the namespaces' labels (which select them).
    pub policy: PolicyView,
    /// The cluster's NetworkAttachmentDefinitions (watched once a pod attaches one).
    pub nads: Arc<nads::Nads>,
    /// What the upgrade report counts (see [`upgrade`]).
    pub upgrade: tokio::sync::watch::Sender<upgrade::Counts>,
}

impl Context {
    /// The pod's `NetworkConfiguration` (same namespace and name), as last watched.
    pub fn conf(&self, key: &Key) -> Option<Arc<NetworkConfiguration>> {
        let conf = ObjectRef::new(&key.name);
        let conf = match key.namespace.as_deref() {
            Some(ns) => conf.within(ns),
            None => conf,
        };
        self.confs.get(&conf)
    }

    /// The admin policies governing the pod's namespace now; unknown (fail closed) before
    /// the policy and namespace watches have listed, or while the namespace is not seen.
    pub fn governing(&self, key: &Key) -> Governing {
        self.policy
            .governing(key.namespace.as_deref().unwrap_or_default())
    }
}

/// A pod by namespace and name (its `NetworkConfiguration` has the same key).
pub type Key = ObjectRef<Pod>;

/// Something changed for one pod, or for all of them (a relist, a runtime resync).
enum Notice {
    Pod(Key),
    All,
}

struct Worker {
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves until `stop` is cancelled. Stopping closes every pod socket and leaves the
/// kernel as it is: a restarted agent adopts it with zero writes.
pub async fn run(
    opts: Options,
    client: Client,
    resolver: Arc<dyn NetnsResolver>,
    stop: CancellationToken,
) -> Result<()> {
    let _lock = crate::statelock::lock(&opts.state_dir)?;
    let states = StateDir::open(&opts.state_dir)?;
    let forwarder = Arc::new(Forwarder::new(opts.forward.clone())?);
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (confs, confs_writer) = reflector::store::<NetworkConfiguration>();
    let (notices, noticed) = mpsc::unbounded_channel();
    let (policy, policy_changes) = PolicyView::watch(client.clone());
    let policy_watch = tokio::spawn(
        follow_policies(policy_changes, notices.clone(), stop.clone()).instrument(
            tracing::info_span!("watch", kind = "NetworkConfigurationPolicy"),
        ),
    );
    let watches = spawn_watches(
        &opts.node,
        &client,
        pods_writer,
        confs_writer,
        notices.clone(),
        &stop,
    );

    let (served, served_rx) = tokio::sync::watch::channel(cares::ServedPods::new());
    let subscriptions = Arc::new(cares::Subscriptions::new(
        forwarder.clone(),
        pods.clone(),
        served_rx,
        cares::LINGER,
    ));
    let nads = Arc::new(nads::Nads::new(
        client.clone(),
        opts.api_timeout,
        stop.child_token(),
    ));
    let ctx = Arc::new(Context {
        nads,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(opts.node.clone()),
            },
        ),
        opts,
        client,
        resolver,
        pods,
        confs,
        forwarder,
        states,
        metrics: Arc::new(probe::Metrics::default()),
        served,
        subscriptions,
        ready: CancellationToken::new(),
        policy,
        upgrade: tokio::sync::watch::Sender::new(upgrade::Counts::default()),
    });
    tokio::spawn(mark_policies_listed(ctx.clone(), notices, stop.clone()));
    serve_probes(&ctx, &stop).await?;
    if !listed(&ctx, &stop).await? {
        return Ok(());
    }
    ctx.ready.cancel();
    info!(node = %ctx.opts.node, pods = ctx.pods.state().len(), "watches listed; serving pods");
    start_upgrade_report(&ctx, &stop);
    dispatch(&ctx, noticed, &stop).await;
    for w in watches.into_iter().chain([policy_watch]) {
        w.abort();
    }
    Ok(())
}

/// The pods listed now that are this node's to serve are the ones the upgrade report waits
/// for; the report is written on the agent's own pod when it knows it.
fn start_upgrade_report(ctx: &Arc<Context>, stop: &CancellationToken) {
    let expected = ctx
        .pods
        .state()
        .iter()
        .filter(|p| {
            matches!(
                decide::pod_plan(p, &ctx.opts.node),
                decide::PodPlan::Serve { .. }
            )
        })
        .map(|p| upgrade_key(&ObjectRef::from_obj(p.as_ref())))
        .collect();
    ctx.upgrade.send_modify(|c| c.expected = expected);
    match ctx.opts.own_pod.clone() {
        Some(own) => {
            tokio::spawn(upgrade::publish(ctx.clone(), own, stop.clone()).in_current_span());
        }
        None => warn!("the agent's pod name is unknown (env POD_NAME): no upgrade report"),
    }
}

/// A pod's key in the upgrade report's counts.
pub fn upgrade_key(key: &Key) -> String {
    format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or_default(),
        key.name
    )
}

/// The watches of this node's selected pods and of its `NetworkConfiguration`s, feeding
/// the reflectors and telling the loop what changed.
fn spawn_watches(
    node: &str,
    client: &Client,
    pods_writer: reflector::store::Writer<Pod>,
    confs_writer: reflector::store::Writer<NetworkConfiguration>,
    notices: mpsc::UnboundedSender<Notice>,
    stop: &CancellationToken,
) -> [tokio::task::JoinHandle<()>; 2] {
    let pod_watch = watcher::Config::default()
        .fields(&format!("spec.nodeName={node}"))
        .labels(&format!("{}=true", api::SELECTION_LABEL));
    let conf_watch = watcher::Config::default().labels(&format!("{}={node}", api::NODE_LABEL));
    [
        tokio::spawn(
            follow(
                reflector::reflector(
                    pods_writer,
                    watcher(Api::<Pod>::all(client.clone()), pod_watch),
                ),
                notices.clone(),
                stop.clone(),
                pod_notice,
            )
            .instrument(tracing::info_span!("watch", kind = "Pod")),
        ),
        tokio::spawn(
            follow(
                reflector::reflector(
                    confs_writer,
                    watcher(Api::<NetworkConfiguration>::all(client.clone()), conf_watch),
                ),
                notices,
                stop.clone(),
                pod_notice,
            )
            .instrument(tracing::info_span!("watch", kind = "NetworkConfiguration")),
        ),
    ]
}

/// Follows the policy view's watches: any change re-evaluates every pod of this node.
async fn follow_policies(
    mut changes: common::policy_view::Changes,
    notices: mpsc::UnboundedSender<Notice>,
    stop: CancellationToken,
) {
    while let Some(Some(next)) = stop.run_until_cancelled(changes.next()).await {
        match next {
            Ok(()) => {
                if notices.send(Notice::All).is_err() {
                    return;
                }
            }
            Err(error) => warn!(%error, "watch failed; retrying with backoff"),
        }
    }
}

/// Logs once the admin policies are known, and re-evaluates every pod then (one served
/// before may be held for want of them).
async fn mark_policies_listed(
    ctx: Arc<Context>,
    notices: mpsc::UnboundedSender<Notice>,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => {}
        () = ctx.policy.listed() => {
            info!(policies = ctx.policy.policy_count(), "admin policies listed");
            let _ = notices.send(Notice::All);
        }
    }
}

/// The probe and metrics endpoint, when an address is configured.
async fn serve_probes(ctx: &Arc<Context>, stop: &CancellationToken) -> Result<()> {
    if let Some(addr) = ctx.opts.probe_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Probe { addr, source })?;
        tokio::spawn(probe::serve(
            listener,
            ctx.metrics.clone(),
            ctx.ready.clone(),
            stop.clone(),
        ));
    }
    Ok(())
}

/// Waits for both watches' first lists; false when stopped first. Nothing is served before
/// both lists are in: a pod whose CR is not known yet would be converged to an empty spec,
/// removing what nes applied.
async fn listed(ctx: &Context, stop: &CancellationToken) -> Result<bool> {
    tokio::select! {
        _ = stop.cancelled() => return Ok(false),
        ready = async { tokio::try_join!(ctx.pods.wait_until_ready(), ctx.confs.wait_until_ready()) } => {
            match ready {
                Ok(_) => {}
                Err(_) => return Err(Error::Watch { what: "the pod and NetworkConfiguration watches ended before listing".into() }),
            }
        }
    }
    // Fail closed after the deadline: pods are served, nothing new is applied.
    let deadline = ctx.opts.policy_list_timeout;
    tokio::select! {
        _ = stop.cancelled() => return Ok(false),
        () = ctx.policy.listed() => {}
        _ = tokio::time::sleep(deadline) => {
            warn!(after = ?deadline, "the NetworkConfigurationPolicy and Namespace watches have not listed; serving pods Degraded (PolicyUnavailable) with nothing new applied");
        }
    }
    Ok(true)
}

/// Wakes (or starts) the worker of each pod a notice is about, until `stop`; then stops
/// the workers and waits for them.
async fn dispatch(
    ctx: &Arc<Context>,
    mut noticed: mpsc::UnboundedReceiver<Notice>,
    stop: &CancellationToken,
) {
    let mut workers = Workers {
        running: HashMap::new(),
        stop: stop.child_token(),
    };
    let mut sandboxes = ctx.resolver.subscribe();
    let mut resync = tokio::time::interval(ctx.opts.resync);
    loop {
        let notice = tokio::select! {
            _ = stop.cancelled() => break,
            n = noticed.recv() => match n {
                Some(n) => n,
                None => break,
            },
            ev = sandboxes.recv() => {
                if matches!(ev, Err(RecvError::Closed)) {
                    sandboxes = tokio::sync::broadcast::channel(1).1;
                    continue;
                }
                match sandbox_notice(&ctx.pods, ev) {
                    Some(n) => n,
                    None => continue,
                }
            },
            _ = resync.tick() => Notice::All,
        };
        workers.notify(ctx, notice);
    }
    workers.stop().await;
}

/// What a runtime event asks for: its pod's worker, or all of them (a resync, or events
/// missed); `None` for a pod this node does not serve.
fn sandbox_notice(
    pods: &reflector::Store<Pod>,
    ev: std::result::Result<SandboxEvent, RecvError>,
) -> Option<Notice> {
    match ev {
        Ok(SandboxEvent::Started { pod_uid, .. } | SandboxEvent::Gone { pod_uid, .. }) => {
            key_of_uid(pods, &pod_uid).map(Notice::Pod)
        }
        Ok(SandboxEvent::Resync) | Err(RecvError::Lagged(_)) => Some(Notice::All),
        Err(RecvError::Closed) => None,
    }
}

/// One worker task per served pod.
struct Workers {
    running: HashMap<Key, Worker>,
    stop: CancellationToken,
}

impl Workers {
    fn notify(&mut self, ctx: &Arc<Context>, notice: Notice) {
        self.running.retain(|_, w| !w.task.is_finished());
        let keys: Vec<Key> = match notice {
            Notice::Pod(key) => vec![key],
            Notice::All => ctx
                .pods
                .state()
                .iter()
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .chain(self.running.keys().cloned())
                .collect(),
        };
        for key in keys {
            match self.running.get(&key) {
                Some(w) => w.wake.notify_one(),
                None if ctx.pods.get(&key).is_some() => {
                    let worker = self.start(ctx, &key);
                    self.running.insert(key, worker);
                }
                None => {}
            }
        }
    }

    fn start(&self, ctx: &Arc<Context>, key: &Key) -> Worker {
        let wake = Arc::new(Notify::new());
        let span = tracing::info_span!(
            "pod",
            namespace = key.namespace.as_deref().unwrap_or_default(),
            pod = %key.name,
            node = %ctx.opts.node
        );
        let task = tokio::spawn(
            worker::run(ctx.clone(), key.clone(), wake.clone(), self.stop.clone()).instrument(span),
        );
        Worker { wake, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        for (_, w) in self.running {
            let _ = w.task.await;
        }
    }
}

/// Drives one reflector, telling the loop which pod each change is about (`notice_of`).
async fn follow<K, S>(
    stream: S,
    notices: mpsc::UnboundedSender<Notice>,
    stop: CancellationToken,
    notice_of: fn(&K) -> Notice,
) where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    S: futures::Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let stream = stream.default_backoff();
    futures::pin_mut!(stream);
    while let Some(Some(next)) = stop.run_until_cancelled(stream.next()).await {
        let notice = match next {
            Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => notice_of(&obj),
            Ok(watcher::Event::InitDone) => Notice::All,
            Ok(_) => continue,
            Err(error) => {
                warn!(%error, "watch failed; retrying with backoff");
                continue;
            }
        };
        if notices.send(notice).is_err() {
            return;
        }
    }
}

/// The notice about a pod's own object or its `NetworkConfiguration` (same name).
fn pod_notice<K: Resource>(obj: &K) -> Notice {
    Notice::Pod(pod_key(obj))
}

/// A pod's key from its own object or from its `NetworkConfiguration` (same name).
fn pod_key<K: Resource>(obj: &K) -> Key {
    let meta = obj.meta();
    let key = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match meta.namespace.as_deref() {
        Some(ns) => key.within(ns),
        None => key,
    }
}

fn key_of_uid(pods: &Store<Pod>, uid: &str) -> Option<Key> {
    pods.find(|p| p.metadata.uid.as_deref() == Some(uid))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
}
