//! The standalone agent, run in this process on its own netns directory and state directory
//! with a throwaway namespace standing in for the host; pods are namespaces bind-mounted
//! into its netns directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent::standalone::Options;
use agent::watch::KeeperOptions;
use tokio_util::sync::CancellationToken;

use crate::client::request;
use crate::cluster_support::DEADLINE;
use crate::common::{self, run, Netns};

/// A standalone agent, restartable on the same state; stopped and unmounted on drop.
pub struct Standalone {
    pub dir: tempfile::TempDir,
    pub host: Netns,
    rescan: Duration,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<agent::error::Result<()>>>,
    mounted: Vec<PathBuf>,
    /// The admin policies (`--policy FILE`); none: the built-in default.
    pub policies: Vec<std::sync::Arc<api::policy::NetworkConfigurationPolicy>>,
    /// The node's `--allow-host-*` ceiling (nothing unless set).
    pub host_access: api::host::HostAccess,
    /// Socket timeouts and caps (production's unless set).
    pub limits: agent::podapi::serve::Limits,
    /// CNI attachments (none: refused).
    pub cni: Option<agent::cni::CniOptions>,
    /// `--allow-host-cni`.
    pub allow_host_cni: bool,
}

impl Standalone {
    /// Not started yet; `host_tag` names the stand-in host namespace.
    pub fn new(host_tag: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("netns")).expect("netns dir");
        Self {
            dir,
            host: Netns::new(host_tag),
            rescan: Duration::from_millis(200),
            stop: CancellationToken::new(),
            task: None,
            mounted: vec![],
            policies: vec![],
            host_access: Default::default(),
            limits: Default::default(),
            cni: None,
            allow_host_cni: false,
        }
    }

    /// How often the agent rescans its netns directory (200 ms unless set).
    pub fn with_rescan(mut self, rescan: Duration) -> Self {
        self.rescan = rescan;
        self
    }

    pub fn options(&self) -> Options {
        Options {
            state_dir: self.dir.path().join("state"),
            netns_dir: self.dir.path().join("netns"),
            admin_socket: self.dir.path().join("run/admin.sock"),
            host_netns: self.host.path(),
            host_access: self.host_access.clone(),
            policies: self.policies.clone(),
            rescan: self.rescan,
            keeper: KeeperOptions {
                debounce: Duration::from_millis(50),
                resync: Duration::from_secs(300),
            },
            limits: self.limits,
            cni: self.cni.clone(),
            allow_host_cni: self.allow_host_cni,
        }
    }

    pub fn start(&mut self) {
        self.stop = CancellationToken::new();
        let (opts, stop) = (self.options(), self.stop.clone());
        self.task = Some(tokio::spawn(agent::standalone::run(opts, stop)));
    }

    /// Stops the running agent (if any), which must have run without an error.
    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("agent task").expect("agent ran");
        }
    }

    /// Stops the running agent (if any) and starts a new one on the same state.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        self.start();
    }

    /// Serves the namespace file `source` as pod `name`.
    pub fn add(&mut self, name: &str, source: &Path) {
        let target = self.dir.path().join("netns").join(name);
        std::fs::write(&target, b"").expect("mount point");
        run(&[
            "mount",
            "--bind",
            &source.to_string_lossy(),
            &target.to_string_lossy(),
        ]);
        self.mounted.push(target);
    }

    /// Serves `ns` as the pod of its name.
    pub fn add_pod(&mut self, ns: &Netns) {
        self.add(&ns.name, &ns.path());
    }

    /// Stops serving `ns`.
    pub fn remove_pod(&mut self, ns: &Netns) {
        let target = self.dir.path().join("netns").join(&ns.name);
        // lazily, as `ip netns del` does: the agent may still hold the file open
        run(&["umount", "-l", &target.to_string_lossy()]);
        std::fs::remove_file(&target).expect("remove mount point");
        self.mounted.retain(|m| m != &target);
    }

    /// One exchange on the admin socket, once it is bound.
    pub async fn admin(&self, method: &str, uri: &str, body: &str) -> (u16, String) {
        let path = self.options().admin_socket;
        let end = Instant::now() + common::startup(DEADLINE);
        let stream = loop {
            match tokio::net::UnixStream::connect(&path).await {
                Ok(s) => break s,
                Err(e) if Instant::now() > end => panic!("admin socket {}: {e}", path.display()),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        request(stream, method, uri, body, &[]).await
    }

    /// [`Standalone::admin`] for a pod, once the (re)started agent serves it.
    pub async fn admin_served(&self, method: &str, uri: &str, body: &str) -> (u16, String) {
        let end = Instant::now() + common::startup(DEADLINE);
        loop {
            let (code, answer) = self.admin(method, uri, body).await;
            if code != 404 || Instant::now() > end {
                return (code, answer);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.stop.cancel();
        for m in &self.mounted {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
    }
}
