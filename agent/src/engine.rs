//! The netlink engine's front door: one [`PodNetwork`] per pod network namespace.
//!
//! ```no_run
//! # async fn demo(spec: api::NetworkConfigurationSpec) -> agent::error::Result<()> {
//! use agent::{engine::PodNetwork, owned::Owned};
//! let net = PodNetwork::open("/var/run/netns/demo-0", "/proc/1/ns/net").await?;
//! let report = net.converge(&spec, &Owned::default()).await?;
//! // persist report.owned; call converge again with it (zero writes when nothing changed)
//! let mut events = net.events().await?;
//! # Ok(()) }
//! ```

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::host::HostAccess;
use api::NetworkConfigurationSpec;
use tokio::sync::OnceCell;
use tracing::{debug, info, instrument};

use crate::apply::{self, ApplyReport, Exec};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::host::HostSide;
use crate::mirror::{Mirror, MAX_AGE};
use crate::netlink::Netlink;
use crate::netns::NetnsExecutor;
use crate::observe::Observed;
use crate::owned::Owned;
use crate::plan::{self, Plan};
use crate::saved::Saved;
use crate::watch;

/// Whether a desired spec was already validated (`api::validate`) where it was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Validate before planning.
    No,
    /// Validated whole by the entrance that accepted it (the standalone store on a PUT).
    Validated,
}

/// A pod's network namespace, with its own executor thread and rtnetlink socket, and the
/// host namespace (for veth peers and host parents), opened the first time a spec needs it.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    pod_ns: NetnsExecutor,
    pod: Netlink,
    host_path: Arc<Path>,
    host: Arc<OnceCell<HostSide>>,
    /// What this pod may do in the host namespace (nothing unless allowed).
    access: Arc<HostAccess>,
    hub: Arc<Hub>,
    /// Runs the pod's CNI attachments; none: attachments are reported as unsupported.
    attacher: Option<Arc<crate::cni::attacher::Attacher>>,
}

/// The pod namespace's one netlink event listener, shared by every subscriber, and the
/// mirror it feeds. The listener stops, closing its socket, when the last clone of the
/// engine goes.
#[derive(Debug, Default)]
struct Hub {
    events: OnceCell<watch::Listener>,
    mirror: Arc<Mirror>,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl PodNetwork {
    /// Opens the pod namespace at `pod` (`/var/run/netns/NAME`, `/proc/PID/ns/net`); the
    /// host namespace at `host` (normally `/proc/1/ns/net` or `/proc/self/ns/net`) is opened
    /// when a spec first declares something on the host side.
    ///
    /// The agent's own namespace, or the host's, is never served as a pod: configuring it
    /// would configure the node ([`Error::HostNetns`]).
    pub async fn open(pod: impl AsRef<Path>, host: impl AsRef<Path>) -> Result<Self> {
        let pod_ns = NetnsExecutor::spawn(pod)?;
        refuse_host_netns(pod_ns.identity(), host.as_ref())?;
        let pod = Netlink::open(&pod_ns).await?;
        Ok(Self {
            pod_ns,
            pod,
            host_path: host.as_ref().into(),
            host: Arc::default(),
            access: Arc::default(),
            hub: Arc::default(),
            attacher: None,
        })
    }

    /// Allows this pod the host-side access `access` (the default allows none).
    pub fn with_host_access(mut self, access: HostAccess) -> Self {
        self.access = Arc::new(access);
        self
    }

    /// Runs this pod's CNI attachments with `attacher` on every pass.
    pub fn with_attacher(mut self, attacher: crate::cni::attacher::Attacher) -> Self {
        self.attacher = Some(Arc::new(attacher));
        self
    }

    /// The pod's attacher, if attachments run here.
    pub fn attacher(&self) -> Option<&crate::cni::attacher::Attacher> {
        self.attacher.as_deref()
    }

    /// What this pod may do in the host namespace.
    pub fn host_access(&self) -> &HostAccess {
        &self.access
    }

    async fn host(&self) -> Result<&HostSide> {
        self.host
            .get_or_try_init(|| HostSide::open(&self.host_path, (*self.access).clone()))
            .await
    }

    /// Identity of the pod namespace (dev + inode of its nsfs file).
    pub fn identity(&self) -> &api::NetnsIdentity {
        self.pod_ns.identity()
    }

    /// The pod namespace's executor, to create other sockets there (e.g. the `@nes` listener).
    pub fn executor(&self) -> &NetnsExecutor {
        &self.pod_ns
    }

    /// Netlink writes sent so far (pod and host sockets).
    pub fn writes(&self) -> u64 {
        self.pod.writes() + self.host.get().map_or(0, |h| h.writes())
    }

    /// Reads links, addresses and routes of the pod namespace, and the host's links when
    /// `with_host`.
    pub async fn observe_with(&self, with_host: bool) -> Result<Observed> {
        // One dump at a time: the kernel refuses a second dump on a socket (EBUSY).
        let links = self.pod.get_links().await?;
        let addresses = self.pod.get_addresses().await?;
        let routes = self.pod.dump_routes().await?;
        let host_links = if with_host {
            self.host().await?.links().await?
        } else {
            Vec::new()
        };
        Ok(Observed {
            links,
            addresses,
            routes,
            host_links,
        })
    }

    /// Reads the pod namespace's current state (without host links).
    pub async fn observe(&self) -> Result<Observed> {
        self.observe_with(false).await
    }

    /// The pod namespace's current state (without host links) as its event-fed mirror
    /// holds it, dumped only when the mirror cannot be trusted (see [`crate::mirror`]).
    /// Readers that ask while a dump is taken share the next one.
    pub async fn observed(&self) -> Result<Arc<Observed>> {
        let mirror = &self.hub.mirror;
        let asked = Instant::now();
        if let Some(o) = mirror.current(asked, MAX_AGE) {
            return Ok(o);
        }
        let _turn = mirror.turn().await;
        if let Some(o) = mirror.current(asked, MAX_AGE) {
            return Ok(o);
        }
        let ticket = mirror.begin_dump();
        match self.observe().await {
            Ok(o) => Ok(mirror.land(ticket, Some(o)).unwrap_or_default()),
            Err(e) => {
                mirror.land(ticket, None);
                Err(e)
            }
        }
    }

    /// Returns once the mirror has followed every write answered so far (this agent's,
    /// a CNI plugin's): the listener's barrier saw all their echoes; otherwise the mirror is
    /// doubted, so the next read dumps.
    async fn settle_mirror(&self) {
        let followed = match self.hub.events.get() {
            Some(listener) => listener.barrier().await,
            None => false,
        };
        if !followed {
            self.hub.mirror.doubt();
        }
    }

    /// The mirror behind [`PodNetwork::observed`].
    pub fn mirror(&self) -> &Mirror {
        &self.hub.mirror
    }

    /// Validates `desired`, observes and plans without writing (the `--dry-run`).
    pub async fn plan(
        &self,
        desired: &NetworkConfigurationSpec,
        owned: &Owned,
    ) -> Result<(Observed, Plan)> {
        let (observed, p) = self.plan_checked(desired, Checked::No, owned).await?;
        Ok((Arc::unwrap_or_clone(observed), p))
    }

    /// Plans against the event-fed mirror ([`PodNetwork::observed`]: a dump only when it
    /// cannot be trusted), or a fresh dump when host links are involved (not mirrored).
    async fn plan_checked(
        &self,
        desired: &NetworkConfigurationSpec,
        checked: Checked,
        owned: &Owned,
    ) -> Result<(Arc<Observed>, Plan)> {
        if checked == Checked::No {
            api::validate(desired)?;
        }
        let observed = match plan::needs_host(desired) {
            true => Arc::new(self.observe_with(true).await?),
            false => self.observed().await?,
        };
        let p = plan::plan(desired, &observed, owned, &self.access);
        Ok((observed, p))
    }

    /// One pass: validate, observe, plan, execute. Errors only when nothing could be done
    /// (invalid spec, netlink socket gone); kernel refusals are per-op results in the report.
    pub async fn converge(
        &self,
        desired: &NetworkConfigurationSpec,
        owned: &Owned,
    ) -> Result<ApplyReport> {
        self.converge_recording(desired, owned, |_| async { Ok(()) })
            .await
    }

    /// [`PodNetwork::converge`], recording ownership before any address is written:
    /// `record` gets the record the pass will own (addresses about to be added included)
    /// and must keep it durably, so a crash mid-pass leaves nothing nes cannot recognise.
    /// If it cannot, nothing is written.
    pub async fn converge_recording<F, Fut>(
        &self,
        desired: &NetworkConfigurationSpec,
        owned: &Owned,
        record: F,
    ) -> Result<ApplyReport>
    where
        F: FnOnce(Owned) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        self.converge_checked(desired, Checked::No, &Saved::default(), owned, record)
            .await
    }

    /// [`PodNetwork::converge_recording`] of a spec that may already have been validated
    /// where it was accepted (`checked`): validation is then not repeated. The pass plans
    /// while `saved` is still being written, and writes nothing before its record is
    /// ([`Error::NotSaved`] if it never is); CNI plugins, whose leases outlive a power loss,
    /// wait for its sync.
    #[instrument(skip_all, fields(netns = %self.pod_ns.path().display()))]
    pub async fn converge_checked<F, Fut>(
        &self,
        desired: &NetworkConfigurationSpec,
        checked: Checked,
        saved: &Saved,
        owned: &Owned,
        record: F,
    ) -> Result<ApplyReport>
    where
        F: FnOnce(Owned) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let started = Instant::now();
        // Attachments first: the interfaces they bring are what the netlink plan may
        // configure further. An invalid spec runs nothing.
        if checked == Checked::No {
            api::validate(desired)?;
        }
        // Plugins write as they run: they wait for the save's sync (a lease outlives a power
        // loss), and only when one is to run, so a pass with no attachment to change plans
        // while the save runs.
        let mut waited = Duration::ZERO;
        let attacher = self.attacher.as_deref();
        let Some(attachments) =
            crate::cni::attacher::run(attacher, &desired.attachments, saved, &mut waited).await
        else {
            return Err(Error::NotSaved);
        };
        if self.attacher.is_some() {
            // The plan reads the mirror: it must have followed what the plugins did.
            self.settle_mirror().await;
        }
        let (observed, p) = self
            .plan_checked(desired, Checked::Validated, owned)
            .await?;
        let planned = started.elapsed();
        // Before the ownership record too, which must never claim what a change that is
        // not kept would have added; and when there is nothing to write, so no report is
        // published for it. The record written is enough, its sync need not have ended (see
        // [`crate::saved`]): a change whose sync then fails is put back, and the pass that
        // follows takes back what this one wrote.
        if !saved.written_counting(&mut waited).await {
            return Err(Error::NotSaved);
        }
        if let Some(intent) = intent(owned, &p.owned) {
            record(intent).await?;
        }
        let recorded = started.elapsed();
        let before = self.writes();
        let host = match plan::needs_host(desired) {
            true => Some(self.host().await?),
            false => None,
        };
        let x = Exec {
            pod: &self.pod,
            pod_fd: self.pod_ns.file().as_raw_fd(),
            host,
        };
        let n_ops = p.ops.len();
        let mut executed = recorded;
        let results = if p.ops.is_empty() {
            Vec::new()
        } else {
            let results = apply::execute(&x, p.ops, &observed).await;
            executed = started.elapsed();
            // A read that follows the pass must see all of it.
            self.settle_mirror().await;
            results
        };
        let report = ApplyReport {
            writes: self.writes() - before,
            owned: apply::owned_after(p.owned, &results),
            results,
            blocked: p.blocked,
            netns: self.identity().clone(),
            attachments,
        };
        if n_ops > 0 {
            info!(
                ops = n_ops,
                writes = report.writes,
                failed = report.failures().count(),
                elapsed_ms = (started.elapsed() - waited).as_secs_f64() * 1000.0,
                waited_for_save_ms = waited.as_secs_f64() * 1000.0,
                planned_ms = planned.as_secs_f64() * 1000.0,
                recorded_ms = recorded.as_secs_f64() * 1000.0,
                executed_ms = executed.as_secs_f64() * 1000.0,
                "converge pass"
            );
        } else {
            debug!(
                blocked = report.blocked.len(),
                "converged, nothing to write"
            );
        }
        Ok(report)
    }

    /// Converges, retrying failed passes with [`Backoff`] until converged or `deadline`
    /// passes; returns the last report.
    pub async fn converge_until(
        &self,
        desired: &NetworkConfigurationSpec,
        owned: &Owned,
        deadline: Duration,
    ) -> Result<ApplyReport> {
        let end = Instant::now() + deadline;
        let mut backoff = Backoff::default();
        let mut owned = owned.clone();
        let mut writes = 0;
        loop {
            let mut report = self.converge(desired, &owned).await?;
            writes += report.writes;
            report.writes = writes;
            let delay = backoff.next_delay();
            if report.is_converged() || Instant::now() + delay > end {
                return Ok(report);
            }
            owned = report.owned.clone();
            tokio::time::sleep(delay).await;
        }
    }

    /// Subscribes to typed events from the pod namespace's link, address and route groups.
    /// The first subscription starts the namespace's one listener, which also feeds the
    /// mirror behind [`PodNetwork::observed`].
    pub async fn events(&self) -> Result<watch::Events> {
        let hub = &self.hub;
        let tx = hub
            .events
            .get_or_try_init(|| async {
                let initial = self.pod.get_links().await?;
                let feed = watch::Feed {
                    mirror: hub.mirror.clone(),
                    stop: hub.stop.clone(),
                };
                watch::listen(&self.pod_ns, initial, feed).await
            })
            .await?;
        Ok(tx.subscribe())
    }
}

/// Errors when `pod` is the agent's own network namespace or the host's.
fn refuse_host_netns(pod: &api::NetnsIdentity, host: &Path) -> Result<()> {
    let same = |other: &Path| {
        crate::netns::identity(other).is_ok_and(|o| o.dev == pod.dev && o.inode == pod.inode)
    };
    if same(Path::new("/proc/self/ns/net")) || same(host) {
        return Err(crate::error::Error::HostNetns {
            netns: pod.path.clone().unwrap_or_default(),
        });
    }
    Ok(())
}

/// The record to keep before a pass runs, when it will add addresses `owned` does not
/// list yet: everything `owned` has, plus what the plan adopts.
fn intent(owned: &Owned, adopted: &Owned) -> Option<Owned> {
    let new = adopted
        .addresses
        .iter()
        .any(|(ifname, set)| set.iter().any(|cidr| !owned.owns_address(ifname, cidr)));
    if !new {
        return None;
    }
    let mut next = adopted.clone();
    for (ifname, set) in &owned.addresses {
        for cidr in set {
            next.add_address(ifname, cidr.clone());
        }
    }
    Some(next)
}
