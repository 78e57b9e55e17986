//! Finding a pod's network namespace through the container runtime.
//!
//! [`CriResolver`] asks the runtime over CRI v1 (containerd or CRI-O socket):
//! `ListPodSandbox` filtered by the pod UID label and `SANDBOX_READY`, then
//! `PodSandboxStatus{verbose}` for the netns path (`runtimeSpec…namespaces[network].path`,
//! else `/proc/PID/ns/net`), and returns the namespace's identity (device + inode) so callers
//! can tell a new sandbox from the same one. When the socket is containerd, it also follows
//! containerd's event stream to notice new and dead sandboxes within milliseconds and to
//! invalidate its cache; on other runtimes it works without events (said once in the log).
//!
//! Decisions are pure functions in [`sandbox`] and [`events`]; [`conn`] maps transport
//! failures to [`ResolveError`].

pub mod conn;
pub mod error;
pub mod events;
pub mod resolver;
pub mod sandbox;

use futures::future::BoxFuture;
use tokio::sync::broadcast;

pub use error::ResolveError;
pub use events::{EventsState, SandboxEvent};
pub use resolver::{CriConfig, CriResolver};
pub use sandbox::POD_UID_LABEL;

/// The pod to resolve. Only `uid` is used to find it; namespace and name go to the logs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    pub fn new(
        uid: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            uid: uid.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// How the netns path was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetnsSource {
    /// `runtimeSpec.linux.namespaces[type=network].path` of the verbose sandbox status.
    RuntimeSpec,
    /// `/proc/PID/ns/net` of the sandbox's process (no path in the spec). Only valid while
    /// that process lives; open it promptly.
    SandboxPid,
}

/// A pod's network namespace as the runtime reports it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedNetns {
    pub pod_uid: String,
    /// The CRI sandbox id (also containerd's container id of the sandbox).
    pub sandbox_id: String,
    /// Path, device and inode of the namespace file. A new sandbox has a new inode.
    pub identity: api::NetnsIdentity,
    pub source: NetnsSource,
    /// Whether the answer came from the cache (still checked against the file's inode).
    pub cached: bool,
}

/// Resolves pods to their network namespace. Object-safe so the engine can hold an
/// `Arc<dyn NetnsResolver>` and tests can substitute their own.
pub trait NetnsResolver: Send + Sync {
    /// The netns of the pod's single ready sandbox.
    fn resolve<'a>(&'a self, pod: &'a PodRef)
        -> BoxFuture<'a, Result<ResolvedNetns, ResolveError>>;

    /// Forgets what is cached for this pod (e.g. the shim restarted).
    fn invalidate(&self, pod_uid: &str);

    /// Sandbox lifecycle notices (empty stream when the runtime has no event API).
    fn subscribe(&self) -> broadcast::Receiver<SandboxEvent>;
}
