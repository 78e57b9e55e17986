//! Network namespace executor: runs closures inside one network namespace, each on a
//! dedicated, short-lived OS thread that enters the namespace, runs it and exits.
//!
//! Sockets are bound to the namespace of the thread that creates them, so anything that
//! must live in a pod's netns (the rtnetlink socket, a multicast listener, the pod's `@nes`
//! abstract unix listener) is created by a closure passed to [`NetnsExecutor::run`] and then
//! used from ordinary async code on any thread. Tokio worker threads never call `setns`.
//! A thread lives only as long as its closure: sockets are created rarely (at start, on a
//! rebind), and an idle thread per pod would be kept for nothing on a node of 110 pods.
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
use std::sync::Arc;

use nix::sched::{setns, CloneFlags};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// What a namespace's thread runs, told whether it entered the namespace.
type Job = Box<dyn FnOnce(nix::Result<()>) + Send + 'static>;

/// The netns of the calling thread (not of the process: a thread may have moved).
#[cfg(test)]
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Runs closures inside one network namespace. Cloning shares the namespace and the turn:
/// closures run one at a time, in submission order.
#[derive(Clone, Debug)]
pub struct NetnsExecutor {
    path: PathBuf,
    identity: api::NetnsIdentity,
    file: Arc<File>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl NetnsExecutor {
    /// Opens the namespace at `path` (`/var/run/netns/NAME`, `/proc/PID/ns/net`, ...) and
    /// checks that a thread can enter it. Fails if the file cannot be opened or entered.
    pub fn spawn(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Netns {
            netns: path.clone(),
            what: "open",
            source,
        })?;
        let identity = identity_of(&path, &file)?;
        let ns = Self {
            path,
            identity,
            file: Arc::new(file),
            turn: Arc::default(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        ns.start(Box::new(move |entered| {
            let _ = tx.send(entered);
        }))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(ns),
            Ok(Err(errno)) => Err(ns.not_entered(errno)),
            Err(_) => Err(ns.gone()),
        }
    }

    /// Runs `f` on a new thread inside the namespace and returns its result. Closures run
    /// one at a time, in submission order. A panic in `f` is reported as
    /// [`Error::ExecutorPanic`].
    pub async fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _turn = self.turn.lock().await;
        let (tx, rx) = oneshot::channel();
        self.start(Box::new(move |entered| {
            let out = entered.map(|()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
            let _ = tx.send(out);
        }))?;
        match rx.await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(panic))) => Err(Error::ExecutorPanic {
                netns: self.path.clone(),
                message: panic_message(&panic),
            }),
            Ok(Err(errno)) => Err(self.not_entered(errno)),
            Err(_) => Err(self.gone()),
        }
    }

    /// Starts a thread that enters the namespace and hands `job` whether it did (the job
    /// then runs there), then exits: the namespace it entered goes with it.
    fn start(&self, job: Job) -> Result<()> {
        let file = self.file.clone();
        std::thread::Builder::new()
            .name(format!("netns-{}", self.identity.inode))
            .spawn(move || job(setns(&*file, CloneFlags::CLONE_NEWNET)))
            .map(drop)
            .map_err(|source| Error::Netns {
                netns: self.path.clone(),
                what: "spawn thread",
                source,
            })
    }

    fn not_entered(&self, errno: nix::errno::Errno) -> Error {
        Error::Netns {
            netns: self.path.clone(),
            what: "setns",
            source: errno.into(),
        }
    }

    fn gone(&self) -> Error {
        Error::ExecutorGone {
            netns: self.path.clone(),
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

    /// Used to keep an idle thread per pod for as long as it was served (113 threads on a
    /// node of 110 pods), though a thread is needed only while a socket is created.
    #[tokio::test]
    async fn an_idle_executor_keeps_no_thread() {
        let executor_threads = || {
            std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|comm| comm.starts_with("netns-"))
                .count()
        };
        let ns = NetnsExecutor::spawn("/proc/self/ns/net").expect("spawn");
        assert_eq!(ns.run(|| 7).await.expect("run"), 7);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while executor_threads() > 0 {
            assert!(std::time::Instant::now() < end, "an executor thread stays");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn spawn_fails_for_a_missing_netns() {
        let err = NetnsExecutor::spawn("/nonexistent/netns").expect_err("missing path");
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
    }
}
