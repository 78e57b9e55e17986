//! [`CriResolver`]: the CRI v1 client, the cache and the containerd event follower.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::{GetContainerRequest, SubscribeRequest};
use containerd_client::types::Envelope;
use futures::future::BoxFuture;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    PodSandboxStatusRequest, VersionRequest,
};
use tokio::sync::{broadcast, watch, OnceCell};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{debug, info, info_span, warn, Instrument};

use super::conn::{probe_http2, unix_channel, CallCtx};
use super::error::ResolveError;
use super::events::{decode_event, EventsState, RuntimeEvent, SandboxEvent};
use super::sandbox::{
    choose_sandbox, is_host_network, netns_location, NetnsInfoProblem, NetnsLocation,
    SandboxChoice, POD_UID_LABEL,
};
use super::{NetnsResolver, NetnsSource, PodRef, ResolvedNetns};
use crate::backoff::Backoff;

/// Label containerd's CRI plugin puts on its containers: `sandbox` or `container`.
const CRI_KIND_LABEL: &str = "io.cri-containerd.kind";
/// Metadata key selecting the containerd namespace of a call.
const CONTAINERD_NAMESPACE_HEADER: &str = "containerd-namespace";

/// Where and how to reach the runtime.
#[derive(Clone, Debug)]
pub struct CriConfig {
    /// The runtime's CRI socket (containerd's or CRI-O's).
    pub socket: PathBuf,
    /// Deadline of every RPC.
    pub rpc_timeout: Duration,
    /// containerd namespace of Kubernetes containers.
    pub containerd_namespace: String,
    /// Follow containerd's event stream (ignored, with one log line, on other runtimes).
    pub events: bool,
    /// Reconnect backoff of the event stream: first delay and cap.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for CriConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            rpc_timeout: Duration::from_secs(5),
            containerd_namespace: "k8s.io".into(),
            events: true,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl CriConfig {
    pub fn with_socket(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            ..Self::default()
        }
    }
}

/// What the runtime's CRI `Version` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub name: String,
    pub version: String,
    pub api_version: String,
}

#[derive(Clone, Debug)]
struct Cached {
    resolved: ResolvedNetns,
}

/// Resolves pods to network namespaces through the CRI, following containerd's events.
/// Cheap to clone; the event follower stops when the last clone is dropped.
#[derive(Clone)]
pub struct CriResolver {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CriConfig,
    channel: Channel,
    /// pod uid -> the last resolution.
    cache: Mutex<HashMap<String, Cached>>,
    /// sandbox id -> pod uid, learnt from events and resolutions.
    sandboxes: Mutex<HashMap<String, String>>,
    /// Bumped on every invalidation: a resolution that started before it is not cached.
    epoch: AtomicU64,
    runtime: OnceCell<RuntimeInfo>,
    events_state: watch::Sender<EventsState>,
    events_live: AtomicBool,
    tx: broadcast::Sender<SandboxEvent>,
    follower: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut f) = self.follower.lock() {
            if let Some(handle) = f.take() {
                handle.abort();
            }
        }
    }
}

// === impl CriResolver ===

impl CriResolver {
    /// Creates the resolver. Nothing is dialled yet; when `cfg.events` is set, the event
    /// follower starts (must be called inside a tokio runtime).
    pub fn new(cfg: CriConfig) -> Self {
        let channel = unix_channel(&cfg.socket, cfg.rpc_timeout);
        let (tx, _) = broadcast::channel(256);
        let initial = if cfg.events {
            EventsState::Connecting
        } else {
            EventsState::Unavailable("events disabled by configuration".into())
        };
        let (events_state, _) = watch::channel(initial);
        let inner = Arc::new(Inner {
            cfg,
            channel,
            cache: Mutex::new(HashMap::new()),
            sandboxes: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            runtime: OnceCell::new(),
            events_state,
            events_live: AtomicBool::new(false),
            tx,
            follower: Mutex::new(None),
        });
        if inner.cfg.events {
            let weak = Arc::downgrade(&inner);
            let span = info_span!("containerd_events", socket = %inner.cfg.socket.display());
            let handle = tokio::spawn(follow_events(weak).instrument(span));
            if let Ok(mut f) = inner.follower.lock() {
                *f = Some(handle);
            }
        }
        Self { inner }
    }

    pub fn config(&self) -> &CriConfig {
        &self.inner.cfg
    }

    /// The state of the containerd event subscription, observable.
    pub fn events_state(&self) -> watch::Receiver<EventsState> {
        self.inner.events_state.subscribe()
    }

    /// The runtime's name and versions (CRI `Version`), probed once per resolver.
    pub async fn runtime_info(&self, pod: &str) -> Result<RuntimeInfo, ResolveError> {
        self.inner.runtime_info(pod).await
    }

    /// Resolves without going through the trait object.
    pub async fn resolve_pod(&self, pod: &PodRef) -> Result<ResolvedNetns, ResolveError> {
        let span = info_span!(
            "cri_resolve",
            pod = %pod.name,
            namespace = %pod.namespace,
            uid = %pod.uid,
            netns = tracing::field::Empty,
        );
        let result = self.inner.resolve(pod).instrument(span.clone()).await;
        match &result {
            Ok(r) => {
                span.record("netns", tracing::field::display(r.identity.inode));
                debug!(parent: &span, sandbox = %r.sandbox_id, cached = r.cached, "resolved");
            }
            Err(error) => {
                debug!(parent: &span, %error, reason = error.reason(), "resolve failed");
            }
        }
        result
    }
}

impl NetnsResolver for CriResolver {
    fn resolve<'a>(
        &'a self,
        pod: &'a PodRef,
    ) -> BoxFuture<'a, Result<ResolvedNetns, ResolveError>> {
        Box::pin(self.resolve_pod(pod))
    }

    fn invalidate(&self, pod_uid: &str) {
        self.inner.invalidate(pod_uid);
    }

    fn subscribe(&self) -> broadcast::Receiver<SandboxEvent> {
        self.inner.tx.subscribe()
    }
}

// === impl Inner: resolution ===

impl Inner {
    fn ctx<'a>(&'a self, pod: &'a str, rpc: &'static str) -> CallCtx<'a> {
        CallCtx {
            pod,
            socket: &self.cfg.socket,
            rpc,
            timeout: self.cfg.rpc_timeout,
        }
    }

    fn cri(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    async fn runtime_info(&self, pod: &str) -> Result<RuntimeInfo, ResolveError> {
        self.runtime
            .get_or_try_init(|| async {
                let ctx = self.ctx(pod, "Version");
                let v = match ctx
                    .run(self.cri().version(ctx.request(VersionRequest {
                        version: "v1".into(),
                    })))
                    .await
                {
                    Ok(v) => v,
                    // The first call on a socket broke: the runtime going away, or a peer
                    // that is no gRPC server? Ask HTTP/2 directly.
                    Err(ResolveError::RuntimeRestarted { source, .. }) => {
                        return Err(
                            match probe_http2(&self.cfg.socket, self.cfg.rpc_timeout).await {
                                Ok((false, first_bytes)) => ResolveError::NotCriSocket {
                                    pod: pod.into(),
                                    socket: self.cfg.socket.clone(),
                                    detail: format!(
                                        "the peer does not speak HTTP/2 (answered {first_bytes:?})"
                                    ),
                                },
                                _ => ResolveError::RuntimeRestarted {
                                    pod: pod.into(),
                                    socket: self.cfg.socket.clone(),
                                    rpc: "Version",
                                    source,
                                },
                            },
                        );
                    }
                    Err(e) => return Err(e),
                };
                let info = RuntimeInfo {
                    name: v.runtime_name,
                    version: v.runtime_version,
                    api_version: v.runtime_api_version,
                };
                info!(
                    runtime = %info.name,
                    version = %info.version,
                    api = %info.api_version,
                    socket = %self.cfg.socket.display(),
                    "connected to CRI runtime"
                );
                Ok(info)
            })
            .await
            .cloned()
    }

    async fn resolve(&self, pod: &PodRef) -> Result<ResolvedNetns, ResolveError> {
        self.runtime_info(&pod.uid).await?;
        let epoch = self.epoch.load(Ordering::SeqCst);

        if let Some(hit) = self.cached(&pod.uid) {
            if self.still_valid(pod, &hit).await? {
                let mut resolved = hit.resolved;
                resolved.cached = true;
                return Ok(resolved);
            }
            self.drop_entry(&pod.uid, &hit.resolved.sandbox_id);
        }

        let sandbox_id = self.find_sandbox(&pod.uid).await?;
        let resolved = self.resolve_sandbox(&pod.uid, &sandbox_id).await?;
        if let Ok(mut s) = self.sandboxes.lock() {
            s.insert(sandbox_id.clone(), pod.uid.clone());
        }
        if self.epoch.load(Ordering::SeqCst) == epoch {
            if let Ok(mut c) = self.cache.lock() {
                c.insert(
                    pod.uid.clone(),
                    Cached {
                        resolved: resolved.clone(),
                    },
                );
            }
        }
        Ok(resolved)
    }

    fn cached(&self, pod_uid: &str) -> Option<Cached> {
        self.cache.lock().ok()?.get(pod_uid).cloned()
    }

    /// A cache entry stays valid while its netns file keeps its inode and, when events are
    /// not live, while the runtime still lists its sandbox as the pod's ready one.
    async fn still_valid(&self, pod: &PodRef, hit: &Cached) -> Result<bool, ResolveError> {
        if !self.events_live.load(Ordering::SeqCst) {
            let listed = self.list(&pod.uid, true).await?;
            if choose_sandbox(&pod.uid, &listed)
                != SandboxChoice::One(hit.resolved.sandbox_id.clone())
            {
                return Ok(false);
            }
        }
        let path = hit
            .resolved
            .identity
            .path
            .as_deref()
            .map(PathBuf::from)
            .unwrap_or_default();
        Ok(matches!(stat_identity(&path), Ok((dev, ino))
            if dev == hit.resolved.identity.dev && ino == hit.resolved.identity.inode))
    }

    async fn list(
        &self,
        pod_uid: &str,
        ready_only: bool,
    ) -> Result<Vec<k8s_cri::v1::PodSandbox>, ResolveError> {
        let ctx = self.ctx(pod_uid, "ListPodSandbox");
        let filter = PodSandboxFilter {
            id: String::new(),
            state: ready_only.then_some(PodSandboxStateValue {
                state: PodSandboxState::SandboxReady as i32,
            }),
            label_selector: [(POD_UID_LABEL.to_string(), pod_uid.to_string())].into(),
        };
        let resp = ctx
            .run(
                self.cri()
                    .list_pod_sandbox(ctx.request(ListPodSandboxRequest {
                        filter: Some(filter),
                    })),
            )
            .await?;
        Ok(resp.items)
    }

    /// The id of the pod's single ready sandbox. Listed with label and READY filters; only
    /// when that finds nothing, listed again by label alone to tell "no such pod" from
    /// "no ready sandbox".
    async fn find_sandbox(&self, pod_uid: &str) -> Result<String, ResolveError> {
        let socket = self.cfg.socket.clone();
        let pod = pod_uid.to_string();
        let mut choice = choose_sandbox(pod_uid, &self.list(pod_uid, true).await?);
        if matches!(
            choice,
            SandboxChoice::NotFound | SandboxChoice::NoneReady(_)
        ) {
            choice = choose_sandbox(pod_uid, &self.list(pod_uid, false).await?);
        }
        match choice {
            SandboxChoice::One(id) => Ok(id),
            SandboxChoice::NotFound => Err(ResolveError::PodNotFound { pod, socket }),
            SandboxChoice::NoneReady(not_ready) => Err(ResolveError::NoReadySandbox {
                pod,
                socket,
                not_ready,
            }),
            SandboxChoice::Several(sandboxes) => Err(ResolveError::SeveralReadySandboxes {
                pod,
                socket,
                sandboxes,
            }),
        }
    }

    async fn resolve_sandbox(
        &self,
        pod_uid: &str,
        sandbox_id: &str,
    ) -> Result<ResolvedNetns, ResolveError> {
        let ctx = self.ctx(pod_uid, "PodSandboxStatus");
        let resp = ctx
            .run(
                self.cri()
                    .pod_sandbox_status(ctx.request(PodSandboxStatusRequest {
                        pod_sandbox_id: sandbox_id.to_string(),
                        verbose: true,
                    })),
            )
            .await?;
        if resp.status.as_ref().is_some_and(is_host_network) {
            return Err(ResolveError::HostNetwork {
                pod: pod_uid.into(),
                sandbox: sandbox_id.into(),
            });
        }
        let location = netns_location(&resp.info).map_err(|problem| match problem {
            NetnsInfoProblem::HostNetwork => ResolveError::HostNetwork {
                pod: pod_uid.into(),
                sandbox: sandbox_id.into(),
            },
            NetnsInfoProblem::Missing(reason) => ResolveError::NoNetnsInfo {
                pod: pod_uid.into(),
                sandbox: sandbox_id.into(),
                reason,
            },
        })?;
        let path = location.path();
        let (dev, inode) =
            stat_identity(&path).map_err(|source| ResolveError::NetnsUnreadable {
                pod: pod_uid.into(),
                sandbox: sandbox_id.into(),
                path: path.clone(),
                source,
            })?;
        Ok(ResolvedNetns {
            pod_uid: pod_uid.into(),
            sandbox_id: sandbox_id.into(),
            identity: api::NetnsIdentity {
                path: Some(path.to_string_lossy().into_owned()),
                dev,
                inode,
            },
            source: match location {
                NetnsLocation::Path(_) => NetnsSource::RuntimeSpec,
                NetnsLocation::Pid(_) => NetnsSource::SandboxPid,
            },
            cached: false,
        })
    }

    fn invalidate(&self, pod_uid: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut c) = self.cache.lock() {
            c.remove(pod_uid);
        }
    }

    fn drop_entry(&self, pod_uid: &str, sandbox_id: &str) {
        if let Ok(mut c) = self.cache.lock() {
            if c.get(pod_uid)
                .is_some_and(|e| e.resolved.sandbox_id == sandbox_id)
            {
                c.remove(pod_uid);
            }
        }
    }

    fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    fn set_events_state(&self, state: EventsState) {
        self.events_live
            .store(state == EventsState::Live, Ordering::SeqCst);
        self.events_state.send_replace(state);
    }
}

/// Device and inode of a namespace file (following `/proc/PID/ns/net`'s magic link).
/// A local stat on nsfs or procfs: it does not block.
fn stat_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let md = std::fs::metadata(path)?;
    Ok((md.dev(), md.ino()))
}

// === the containerd event follower ===

fn with_namespace<T>(msg: T, namespace: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = namespace.parse() {
        req.metadata_mut().insert(CONTAINERD_NAMESPACE_HEADER, v);
    }
    req
}

/// Subscribes to containerd's events and keeps the cache honest; reconnects with backoff
/// when the runtime restarts; ends for good when the runtime has no containerd API or the
/// resolver is dropped.
async fn follow_events(weak: Weak<Inner>) {
    let Some(inner) = weak.upgrade() else { return };
    let mut backoff = Backoff::new(inner.cfg.backoff_base, inner.cfg.backoff_max);
    drop(inner);
    let mut warned_at_attempt = false;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let mut client = EventsClient::new(inner.channel.clone());
        let ns = inner.cfg.containerd_namespace.clone();
        let request = with_namespace(
            SubscribeRequest {
                filters: vec![format!("namespace=={ns}")],
            },
            &ns,
        );
        drop(inner);
        // containerd sends response headers with the first event, so this future stays
        // pending until something happens in the namespace: no deadline here, only the
        // connection's own failures.
        let subscribed = client.subscribe(request).await;
        let Some(inner) = weak.upgrade() else { return };
        let mut stream = match subscribed {
            Ok(resp) => resp.into_inner(),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                let reason = format!(
                    "the runtime at {} has no containerd event API ({}); resolving without events, \
                     cached answers are re-checked with ListPodSandbox",
                    inner.cfg.socket.display(),
                    status.message()
                );
                info!("{reason}");
                inner.set_events_state(EventsState::Unavailable(reason));
                return;
            }
            Err(status) => {
                let delay = backoff.next_delay();
                if !warned_at_attempt {
                    warn!(error = %status, retry_in = ?delay, "containerd event subscription failed");
                    warned_at_attempt = true;
                } else {
                    debug!(error = %status, retry_in = ?delay, "containerd event subscription failed");
                }
                inner.set_events_state(EventsState::Connecting);
                drop(inner);
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        // Events may have been missed before this point: start from a clean cache.
        inner.clear();
        inner.set_events_state(EventsState::Live);
        let _ = inner.tx.send(SandboxEvent::Resync);
        info!("following containerd events");
        backoff.reset();
        warned_at_attempt = false;
        drop(inner);

        if !relay_events(&weak, &mut stream).await {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Hands each event of the namespace to the cache until the stream ends (true: reconnect)
/// or the resolver is dropped (false).
async fn relay_events(weak: &Weak<Inner>, stream: &mut tonic::Streaming<Envelope>) -> bool {
    loop {
        let next = stream.message().await;
        let Some(inner) = weak.upgrade() else {
            return false;
        };
        match next {
            Ok(Some(envelope)) => {
                if envelope.namespace != inner.cfg.containerd_namespace {
                    continue;
                }
                let Some(any) = envelope.event else { continue };
                match decode_event(&envelope.topic, &any.value) {
                    Some(event) => on_event(&inner, event).await,
                    None => debug!(topic = %envelope.topic, "ignored containerd event"),
                }
            }
            Ok(None) | Err(_) => {
                let error = next.err().map(|e| e.to_string()).unwrap_or_default();
                warn!(%error, "containerd event stream ended; reconnecting");
                inner.set_events_state(EventsState::Connecting);
                inner.clear();
                let _ = inner.tx.send(SandboxEvent::Resync);
                return true;
            }
        }
    }
}

async fn on_event(inner: &Inner, event: RuntimeEvent) {
    let id = event.container_id().to_string();
    if event.is_birth() {
        let Some(pod_uid) = sandbox_pod(inner, &id).await else {
            return;
        };
        inner.invalidate(&pod_uid);
        if let Ok(mut s) = inner.sandboxes.lock() {
            s.insert(id.clone(), pod_uid.clone());
        }
        if matches!(event, RuntimeEvent::TaskStart { .. }) {
            info!(pod = %pod_uid, sandbox = %id, "sandbox started");
            let _ = inner.tx.send(SandboxEvent::Started {
                pod_uid,
                sandbox_id: id,
            });
        }
        return;
    }
    // A death: exit or delete of a sandbox we know.
    let known = inner.sandboxes.lock().ok().and_then(|mut s| {
        if matches!(event, RuntimeEvent::ContainerDelete { .. }) {
            s.remove(&id)
        } else {
            s.get(&id).cloned()
        }
    });
    let Some(pod_uid) = known else { return };
    let cached_here = inner
        .cache
        .lock()
        .ok()
        .is_some_and(|c| c.get(&pod_uid).is_some_and(|e| e.resolved.sandbox_id == id));
    inner.epoch.fetch_add(1, Ordering::SeqCst);
    inner.drop_entry(&pod_uid, &id);
    if cached_here || matches!(event, RuntimeEvent::TaskExit { .. }) {
        info!(pod = %pod_uid, sandbox = %id, "sandbox gone");
        let _ = inner.tx.send(SandboxEvent::Gone {
            pod_uid,
            sandbox_id: id,
        });
    }
}

/// The pod UID of a containerd container if it is a CRI sandbox (labels looked up under the
/// RPC deadline; anything else, or a failure, is `None`).
async fn sandbox_pod(inner: &Inner, container_id: &str) -> Option<String> {
    let mut client = ContainersClient::new(inner.channel.clone());
    let mut req = with_namespace(
        GetContainerRequest {
            id: container_id.to_string(),
        },
        &inner.cfg.containerd_namespace,
    );
    req.set_timeout(inner.cfg.rpc_timeout);
    let resp = match tokio::time::timeout(inner.cfg.rpc_timeout, client.get(req)).await {
        Ok(Ok(resp)) => resp.into_inner(),
        Ok(Err(status)) => {
            debug!(container = %container_id, error = %status, "container lookup failed");
            return None;
        }
        Err(_) => {
            warn!(container = %container_id, "container lookup exceeded its deadline");
            return None;
        }
    };
    let labels = resp.container?.labels;
    if labels.get(CRI_KIND_LABEL).map(String::as_str) != Some("sandbox") {
        return None;
    }
    labels.get(POD_UID_LABEL).cloned()
}
