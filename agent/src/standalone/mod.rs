//! The standalone agent: nes on one Linux host, without Kubernetes. Every named network
//! namespace (`ip netns add NAME`) is a pod: its desired state is persisted in the state
//! directory, applied by the engine, and served on `@nes` inside that namespace. The host
//! admin socket (mode 0600) serves the same API for any pod with `?pod=NAME`.

pub mod cares;
pub mod journal;
pub mod pods;
pub mod store;

// The socket API is shared with the cluster agent; kept reachable under its old paths.
pub use crate::podapi::{events, http, podsock, serve};

use std::collections::BTreeSet;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use inotify::{EventStream, Inotify, WatchMask};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::podapi::Pods;
use crate::watch::KeeperOptions;
use store::{DesiredStore, FileStore};

/// Where the standalone agent keeps and finds things.
#[derive(Clone, Debug)]
pub struct Options {
    pub state_dir: PathBuf,
    pub netns_dir: PathBuf,
    pub admin_socket: PathBuf,
    /// The host's network namespace (veth peers and host parents live there).
    pub host_netns: PathBuf,
    /// What pods may do in the host namespace (nothing unless allowed).
    pub host_access: api::host::HostAccess,
    /// The admin policies (`--policy FILE`); a netns is selected by its name
    /// ([`api::policy::netns_labels`]); none: the built-in default.
    pub policies: Vec<Arc<api::policy::NetworkConfigurationPolicy>>,
    /// Namespaces are rescanned this often, besides inotify, to catch what it missed.
    pub rescan: Duration,
    pub keeper: KeeperOptions,
    /// Timeouts and caps of every socket served (production's by default).
    pub limits: crate::podapi::serve::Limits,
    /// CNI attachments: where plugins and networks are; none: attachments are refused.
    pub cni: Option<crate::cni::CniOptions>,
    /// The node allows CNI attachments (`--allow-host-cni`); the policy must too.
    pub allow_host_cni: bool,
}

/// Serves until `stop` is cancelled. Stopping closes sockets only: never a netlink write.
pub async fn run(opts: Options, stop: CancellationToken) -> Result<()> {
    let _lock = crate::statelock::lock(&opts.state_dir)?;
    let store: Arc<dyn DesiredStore> = Arc::new(FileStore::open(&opts.state_dir)?);
    let pods = Arc::new(Pods::default());
    let cares = Arc::new(cares::Cares::open(
        &opts.state_dir,
        pods.clone(),
        stop.child_token(),
        cares::LINGER,
    )?);
    let admin = bind_admin(&opts.admin_socket)?;
    info!(socket = %opts.admin_socket.display(), "serving the admin socket");
    let admin = tokio::spawn(serve::serve(
        admin,
        http::router(http::Scope::Admin(pods.clone())),
        stop.child_token(),
        serve::admin_caps(),
        opts.limits.header_timeout,
    ));

    std::fs::create_dir_all(&opts.netns_dir).map_err(|source| Error::File {
        path: opts.netns_dir.clone(),
        source,
    })?;
    let mut inotify = watch_dir(&opts.netns_dir);
    loop {
        let settled = reconcile(&opts, &store, &cares, &pods).await;
        // A namespace caught half-created is looked at again soon, not at the next rescan.
        let next = if settled {
            opts.rescan
        } else {
            opts.rescan.min(Duration::from_millis(200))
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(next) => {}
            _ = dir_changed(inotify.as_mut()) => {}
        }
    }
    for name in pods.names() {
        if let Some(pod) = pods.remove(&name) {
            pod.stop().await;
        }
    }
    let _ = admin.await;
    let _ = std::fs::remove_file(&opts.admin_socket);
    Ok(())
}

/// Starts pods for new namespaces, stops those whose namespace went or was replaced.
/// Returns false when a namespace could not be opened yet.
async fn reconcile(
    opts: &Options,
    store: &Arc<dyn DesiredStore>,
    cares: &Arc<cares::Cares>,
    pods: &Arc<Pods>,
) -> bool {
    let present = list_netns(&opts.netns_dir);
    cares.keep_owners(&present);
    for name in pods.names() {
        let path = opts.netns_dir.join(&name);
        let same = present.contains(&name)
            && crate::netns::identity(&path)
                .ok()
                .zip(pods.get(&name))
                .is_some_and(|(id, pod)| &id == pod.identity());
        if !same {
            info!(pod = %name, "network namespace gone or replaced: releasing its sockets and state");
            if let Some(pod) = pods.remove(&name) {
                // Its attachments' addresses go back to their IPAM (DEL with the cache).
                if let Some(attacher) = pod.network().attacher().cloned() {
                    tokio::spawn(async move { attacher.detach_all().await });
                }
                pod.stop().await;
            }
        }
    }
    let starting = present
        .into_iter()
        .filter(|n| pods.get(n).is_none())
        .map(|name| {
            let path = opts.netns_dir.join(&name);
            let (store, cares) = (store.clone(), cares.clone());
            let keeper = opts.keeper.clone();
            let host = pods::Host {
                netns: opts.host_netns.clone(),
                access: opts.host_access.clone(),
                policies: opts.policies.clone(),
                limits: opts.limits,
                cni: opts.cni.clone(),
                allow_host_cni: opts.allow_host_cni,
            };
            async move {
                (
                    name.clone(),
                    pods::start(&name, &path, &host, store, cares, keeper).await,
                )
            }
        });
    let mut settled = true;
    for (name, started) in futures::future::join_all(starting).await {
        match started {
            Ok(pod) => {
                info!(pod = %name, "serving pod");
                pods.insert(pod);
            }
            // The host's own namespace under a pod's name: refused, and not retried soon.
            Err(error @ Error::HostNetns { .. }) => {
                warn!(pod = %name, %error, "refusing to serve the host's network namespace");
            }
            // `ip netns add` creates the file before mounting the namespace on it: the next
            // pass picks it up.
            Err(error) => {
                warn!(pod = %name, %error, "cannot open the network namespace yet");
                settled = false;
            }
        }
    }
    settled
}

fn list_netns(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| api::validate::check_manager(n).is_ok() && !n.starts_with('.'))
        .collect()
}

fn watch_dir(dir: &Path) -> Option<EventStream<[u8; 1024]>> {
    let mask = WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::ATTRIB;
    let made = Inotify::init().and_then(|i| {
        i.watches().add(dir, mask)?;
        i.into_event_stream([0u8; 1024])
    });
    match made {
        Ok(stream) => Some(stream),
        Err(error) => {
            warn!(%error, dir = %dir.display(), "no inotify: relying on the periodic rescan");
            None
        }
    }
}

/// Resolves when the directory changed (never, without inotify).
async fn dir_changed(inotify: Option<&mut EventStream<[u8; 1024]>>) {
    match inotify {
        // The pass that follows looks at the directory itself, so the event's content is moot.
        Some(stream) => {
            let _ = stream.next().await;
        }
        None => std::future::pending().await,
    }
}

/// A filesystem socket for root on the host: its directory is 0700 and the socket 0600.
fn bind_admin(path: &Path) -> Result<tokio::net::UnixListener> {
    let file_err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(file_err)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(file_err(e)),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(file_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(file_err)?;
    Ok(listener)
}
