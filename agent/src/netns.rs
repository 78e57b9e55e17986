//! Network namespace executor: a dedicated OS thread that lives inside one network
//! namespace and runs closures there.
//!
//! Sockets are bound to the namespace of the thread that creates them, so anything that
//! must live in a pod's netns (the rtnetlink socket, a multicast listener, the pod's `@nes`
//! abstract unix listener) is created by a closure passed to [`NetnsExecutor::run`] and then
//! used from ordinary async code on any thread. Tokio worker threads never call `setns`.
//!
//! ```no_run
//! # async fn demo() -> agent::error::Result<()> {
//! let ns = agent::netns::NetnsExecutor::spawn("/var/run/netns/demo")?;
//! let listener = ns.run(|| std::os::unix::net::UnixListener::bind("/tmp/x")).await?;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use nix::sched::{setns, CloneFlags};
use tokio::sync::oneshot;
use tracing::{debug, error};

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The netns of the calling thread (not of the process: a thread may have moved).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Handle to a thread running inside one network namespace. Cloning shares the thread; the
/// thread restores its original namespace and exits when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct NetnsExecutor {
    tx: mpsc::Sender<Job>,
    path: PathBuf,
    identity: api::NetnsIdentity,
    file: std::sync::Arc<File>,
}

impl NetnsExecutor {
    /// Starts a thread that enters the namespace at `path` (`/var/run/netns/NAME`,
    /// `/proc/PID/ns/net`, ...). Fails if the file cannot be opened or entered.
    pub fn spawn(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Netns {
            netns: path.clone(),
            what: "open",
            source,
        })?;
        let identity = identity_of(&path, &file)?;
        let target = file.try_clone().map_err(|source| Error::Netns {
            netns: path.clone(),
            what: "dup",
            source,
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<(), Error>>();
        let thread_path = path.clone();
        let name = format!("netns-{}", identity.inode);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || executor_thread(thread_path, target, rx, ready_tx))
            .map_err(|source| Error::Netns {
                netns: path.clone(),
                what: "spawn thread",
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::ExecutorGone { netns: path }),
        }
        Ok(Self {
            tx,
            path,
            identity,
            file: std::sync::Arc::new(file),
        })
    }

    /// Runs `f` on the namespace's thread and returns its result. Closures run one at a
    /// time, in submission order. A panic in `f` is reported as [`Error::ExecutorPanic`].
    pub async fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(out);
        });
        self.tx.send(job).map_err(|_| Error::ExecutorGone {
            netns: self.path.clone(),
        })?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(panic)) => Err(Error::ExecutorPanic {
                netns: self.path.clone(),
                message: panic_message(&panic),
            }),
            Err(_) => Err(Error::ExecutorGone {
                netns: self.path.clone(),
            }),
        }
    }

    /// Path the executor was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Device and inode of the namespace (stable for its lifetime; a new sandbox has a new one).
    pub fn identity(&self) -> &api::NetnsIdentity {
        &self.identity
    }

    /// An open file of the namespace (for `IFLA_NET_NS_FD`); it pins the namespace.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Reads the identity (nsfs device and inode) of the namespace at `path`.
pub fn identity(path: impl AsRef<Path>) -> Result<api::NetnsIdentity> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| Error::Netns {
        netns: path.to_path_buf(),
        what: "open",
        source,
    })?;
    identity_of(path, &file)
}

fn identity_of(path: &Path, file: &File) -> Result<api::NetnsIdentity> {
    let md = file.metadata().map_err(|source| Error::Netns {
        netns: path.to_path_buf(),
        what: "stat",
        source,
    })?;
    Ok(api::NetnsIdentity {
        path: Some(path.display().to_string()),
        dev: md.dev(),
        inode: md.ino(),
    })
}

/// Restores the thread's original namespace when dropped; if that fails the thread must not
/// run anything else, so it aborts the thread by panicking (the thread is ours alone).
struct RestoreGuard {
    original: File,
    netns: PathBuf,
}

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        if let Err(errno) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            error!(netns = %self.netns.display(), %errno, "cannot restore original netns; executor thread exits");
            // Nothing else runs on this thread after the guard drops; leaving the loop is enough.
        }
    }
}

fn executor_thread(
    path: PathBuf,
    target: File,
    rx: mpsc::Receiver<Job>,
    ready: mpsc::Sender<std::result::Result<(), Error>>,
) {
    let original = match File::open(THREAD_NETNS) {
        Ok(f) => f,
        Err(source) => {
            let _ = ready.send(Err(Error::Netns {
                netns: path,
                what: "open own netns",
                source,
            }));
            return;
        }
    };
    if let Err(errno) = setns(&target, CloneFlags::CLONE_NEWNET) {
        let _ = ready.send(Err(Error::Netns {
            netns: path,
            what: "setns",
            source: std::io::Error::from(errno),
        }));
        return;
    }
    let _guard = RestoreGuard {
        original,
        netns: path.clone(),
    };
    drop(target);
    let _ = ready.send(Ok(()));
    debug!(netns = %path.display(), "netns executor started");
    while let Ok(job) = rx.recv() {
        job();
    }
    debug!(netns = %path.display(), "netns executor stopping");
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn executor_reports_the_identity_of_its_own_netns() {
        let ns = NetnsExecutor::spawn("/proc/self/ns/net").expect("spawn in own netns");
        let inside = ns
            .run(|| identity(THREAD_NETNS))
            .await
            .expect("run")
            .expect("identity");
        assert_eq!(
            (inside.dev, inside.inode),
            (ns.identity().dev, ns.identity().inode)
        );
    }

    #[tokio::test]
    async fn executor_turns_a_panic_into_an_error() {
        let ns = NetnsExecutor::spawn("/proc/self/ns/net").expect("spawn");
        let err = ns
            .run(|| -> u32 { panic!("boom") })
            .await
            .expect_err("panic is an error");
        assert!(err.to_string().contains("boom"), "{err}");
        assert_eq!(ns.run(|| 7).await.expect("thread survives a panic"), 7);
    }

    #[test]
    fn spawn_fails_for_a_missing_netns() {
        let err = NetnsExecutor::spawn("/nonexistent/netns").expect_err("missing path");
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
    }
}
