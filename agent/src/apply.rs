//! Executes a plan: pipelined netlink writes, per-op results, retry backoff.

use std::collections::{HashMap, HashSet};

use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::host::HostSide;
use crate::netlink::{Netlink, Pending};
use crate::observe::Observed;
use crate::owned::Owned;
use crate::plan::{Blocked, LinkCreate, LinkKind, ObjectRef, Op};

/// Most writes in flight on one socket at once: bounded so their answers never overflow the
/// socket, and so the echoes of one batch fit the event channel the keeper drains during the
/// pass (`watch::EVENT_BUFFER`; a lag there would cost a needless second pass).
const WINDOW: usize = 128;

/// How one write ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum Outcome {
    Applied,
    Failed {
        /// Kernel errno (EEXIST = 17, ENODEV = 19, ...) when the kernel refused.
        errno: Option<i32>,
        message: String,
    },
}

/// One write and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpResult {
    pub op: Op,
    pub outcome: Outcome,
}

impl OpResult {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }
}

/// What one `converge` pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// Netlink write requests sent (0 when the namespace was already converged).
    pub writes: u64,
    /// Every write of the plan with its outcome, in plan order.
    pub results: Vec<OpResult>,
    /// Declared objects that could not be acted on.
    pub blocked: Vec<Blocked>,
    /// The ownership record after this pass; persist it and pass it to the next pass.
    pub owned: Owned,
    /// The namespace this pass ran in.
    pub netns: api::NetnsIdentity,
    /// Every declared CNI attachment after this pass, in declared order.
    pub attachments: Vec<api::AttachmentStatus>,
}

impl ApplyReport {
    /// Failed writes.
    pub fn failures(&self) -> impl Iterator<Item = &OpResult> {
        self.results.iter().filter(|r| r.failed())
    }

    /// Everything declared is in place (no failed write, nothing blocked).
    pub fn is_converged(&self) -> bool {
        self.failures().next().is_none()
            && self.blocked.is_empty()
            && self
                .attachments
                .iter()
                .all(|a| a.state == api::ObjectState::Applied)
    }

    /// The error of the last failed write for this object, if any.
    pub fn error_for(&self, object: &ObjectRef) -> Option<String> {
        self.results.iter().rev().find_map(|r| match &r.outcome {
            Outcome::Failed { message, .. } if &r.op.object() == object => Some(message.clone()),
            _ => None,
        })
    }
}

/// Sockets and namespace files a plan runs with.
pub(crate) struct Exec<'a> {
    pub pod: &'a Netlink,
    pub pod_fd: std::os::fd::RawFd,
    /// The host boundary, opened only for plans that touch the host.
    pub host: Option<&'a HostSide>,
}

impl Exec<'_> {
    fn host(&self) -> Result<&HostSide> {
        self.host.ok_or_else(|| Error::Conflict {
            object: "host namespace".into(),
            reason: "internal: a host-side write in a plan that was not expected to need the host"
                .into(),
        })
    }
}

/// Runs `ops` in order. Removals are pipelined, link creations run one by one (later
/// writes need the new link's index), everything else is pipelined again. Every op gets a
/// result; a failure never stops the others, but nothing is ever written to an object
/// whose create failed (its name may belong to something nes does not own).
pub(crate) async fn execute(x: &Exec<'_>, ops: Vec<Op>, observed: &Observed) -> Vec<OpResult> {
    let mut links = Targets::new(observed);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; ops.len()];

    let first_create = ops
        .iter()
        .position(|o| matches!(o, Op::CreateLink(_)))
        .unwrap_or(ops.len());
    let after_creates = ops
        .iter()
        .rposition(|o| matches!(o, Op::CreateLink(_)))
        .map_or(first_create, |i| i + 1);

    // Removals.
    pipeline(
        &mut outcomes,
        (0..first_create)
            .map(|i| (i, send(x, &ops[i], &links)))
            .collect(),
    )
    .await;

    // Link creations, one at a time.
    for i in first_create..after_creates {
        let Op::CreateLink(c) = &ops[i] else { continue };
        outcomes[i] = Some(create_one(x, c, &mut links).await);
    }

    // Settings, host peers, addresses, routes.
    let sends = (after_creates..ops.len())
        .map(|i| match links.failed_dependency(&ops[i]) {
            Some(name) => (
                i,
                Err(Error::Conflict {
                    object: ops[i].object().to_string(),
                    reason: format!("not executed: creating link {name} failed"),
                }),
            ),
            None => (i, send(x, &ops[i], &links)),
        })
        .collect();
    pipeline(&mut outcomes, sends).await;
    results(x, ops, outcomes)
}

/// Creates one link and records its index (or its failure) for the writes after it.
async fn create_one(x: &Exec<'_>, c: &LinkCreate, links: &mut Targets) -> Outcome {
    let r = create_link(x, c, &links.pod).await;
    match &r {
        Ok((index, peer)) => {
            links.pod.insert(c.name.clone(), *index);
            if let Some(peer) = peer {
                links.created_peers.insert(c.name.clone(), *peer);
            }
        }
        Err(_) => {
            // A recreated link's old index is gone; nothing may be sent to the name.
            links.pod.remove(&c.name);
            links.failed_creates.insert(c.name.clone());
        }
    }
    outcome(r.map(|_| ()))
}

/// Every op with its outcome, failures logged.
fn results(x: &Exec<'_>, ops: Vec<Op>, outcomes: Vec<Option<Outcome>>) -> Vec<OpResult> {
    ops.into_iter()
        .zip(outcomes)
        .map(|(op, o)| {
            let outcome = o.unwrap_or(Outcome::Failed { errno: None, message: "not executed".into() });
            if let Outcome::Failed { message, .. } = &outcome {
                warn!(pod_netns = %x.pod.netns(), op = %op, error = %message, "netlink write failed");
            }
            OpResult { op, outcome }
        })
        .collect()
}

/// The kernel objects a pass's writes address, by index.
struct Targets {
    /// Pod links by name: observed, updated with what this pass created.
    pod: HashMap<String, u32>,
    /// Host bridges by name (a veth peer's `peerBridge`).
    host_bridges: HashMap<String, u32>,
    /// Host ends of the veths created in this pass, by the pod end's name.
    created_peers: HashMap<String, u32>,
    /// Links whose create failed in this pass.
    failed_creates: HashSet<String>,
}

impl Targets {
    /// What the pass starts from: the observed pod links and host bridges.
    fn new(observed: &Observed) -> Self {
        Self {
            pod: observed
                .links
                .iter()
                .map(|l| (l.name.clone(), l.index))
                .collect(),
            host_bridges: observed
                .host_links
                .iter()
                .filter(|l| l.kind.as_deref() == Some("bridge"))
                .map(|l| (l.name.clone(), l.index))
                .collect(),
            created_peers: HashMap::new(),
            failed_creates: HashSet::new(),
        }
    }

    /// The failed create `op` depends on, if any.
    fn failed_dependency<'a>(&self, op: &'a Op) -> Option<&'a str> {
        let refs: Vec<&str> = match op {
            Op::SetLink { ifname, master, .. } => std::iter::once(ifname.as_str())
                .chain(master.as_deref())
                .collect(),
            Op::SetHostPeer { ifname, .. } | Op::AddAddress { ifname, .. } => vec![ifname],
            Op::AddRoute { route, .. } => route.dev.as_deref().into_iter().collect(),
            _ => vec![],
        };
        refs.into_iter().find(|n| self.failed_creates.contains(*n))
    }
}

async fn pipeline(outcomes: &mut [Option<Outcome>], sends: Vec<(usize, Result<Pending>)>) {
    let mut inflight = FuturesUnordered::new();
    for (i, sent) in sends {
        match sent {
            Ok(p) => inflight.push(async move { (i, p.await) }),
            Err(e) => outcomes[i] = Some(outcome(Err(e))),
        }
        // A full window is sent as one batch; half of it is answered before more is sent.
        if inflight.len() >= WINDOW {
            while inflight.len() > WINDOW / 2 {
                if let Some((j, r)) = inflight.next().await {
                    outcomes[j] = Some(outcome(r));
                }
            }
        }
    }
    while let Some((j, r)) = inflight.next().await {
        outcomes[j] = Some(outcome(r));
    }
}

fn outcome(r: Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Applied,
        Err(e) => Outcome::Failed {
            errno: e.errno(),
            message: e.to_string(),
        },
    }
}

fn missing(what: &str, name: &str) -> Error {
    Error::Conflict {
        object: format!("{what} {name}"),
        reason: "link not found (errno ENODEV)".into(),
    }
}

/// Sends one non-create op now.
fn send(x: &Exec<'_>, op: &Op, links: &Targets) -> Result<Pending> {
    let idx = |n: &str| links.pod.get(n).copied().ok_or_else(|| missing("link", n));
    match op {
        Op::DelRoute(r) => tolerate_gone(
            x.pod.del_route(r)?,
            &[libc_errno::ESRCH, libc_errno::ENOENT],
        ),
        Op::DelAddress { ifname, addr } => tolerate_gone(
            x.pod.del_address(idx(ifname)?, ifname, *addr)?,
            &[libc_errno::EADDRNOTAVAIL, libc_errno::ENODEV],
        ),
        Op::DelLink { ifname } => {
            tolerate_gone(x.pod.del_link(idx(ifname)?, ifname)?, &[libc_errno::ENODEV])
        }
        Op::SetLink {
            ifname,
            mtu,
            up,
            master,
        } => {
            let controller = match master {
                Some(m) => Some(Some(idx(m)?)),
                None => None,
            };
            x.pod
                .set_link(idx(ifname)?, ifname, *mtu, *up, controller, None)
        }
        Op::SetHostPeer {
            ifname,
            peer_index,
            bridge,
            alias,
            ..
        } => {
            // The host end is the peer the kernel named for this very pod link: the kept
            // pair's (planned) or the one created in this pass; never a host link by name.
            let peer = peer_index
                .or_else(|| links.created_peers.get(ifname).copied())
                .ok_or_else(|| Error::Conflict {
                    object: format!("interface {ifname}"),
                    reason: "the host end of this veth was not created by nes in this pass; nothing was written to the host".into(),
                })?;
            let bridge = match bridge.as_deref() {
                Some(b) => Some((
                    b,
                    links
                        .host_bridges
                        .get(b)
                        .copied()
                        .ok_or_else(|| missing("host bridge", b))?,
                )),
                None => None,
            };
            x.host()?.set_peer(ifname, peer, bridge, alias)
        }
        Op::AddAddress { ifname, addr } => x.pod.add_address(idx(ifname)?, ifname, *addr),
        Op::AddRoute { route, replace } => {
            let oif = match &route.dev {
                Some(d) => Some(idx(d)?),
                None => None,
            };
            x.pod.add_route(route, oif, *replace)
        }
        Op::CreateLink(_) => Err(Error::Conflict {
            object: op.object().to_string(),
            reason: "internal: create is not pipelined".into(),
        }),
    }
}

/// A removal of something already gone succeeded.
fn tolerate_gone(p: Pending, gone: &'static [i32]) -> Result<Pending> {
    Ok(Box::pin(async move {
        match p.await {
            Err(Error::Kernel { errno, .. }) if gone.contains(&errno) => Ok(()),
            other => other,
        }
    }))
}

/// Creates a link, marks it and sets its state; returns its index in the pod and, for a
/// veth, the index of its host end (the peer the kernel reports for the new link).
async fn create_link(
    x: &Exec<'_>,
    c: &crate::plan::LinkCreate,
    pod: &HashMap<String, u32>,
) -> Result<(u32, Option<u32>)> {
    let (in_host, parent_name) = match &c.kind {
        LinkKind::Macvlan {
            parent, in_host, ..
        }
        | LinkKind::Ipvlan {
            parent, in_host, ..
        } => (*in_host, Some(parent)),
        LinkKind::Vlan { parent, .. } => (false, Some(parent)),
        LinkKind::Vxlan { parent, .. } => (false, parent.as_ref()),
        _ => (false, None),
    };
    match parent_name {
        Some(p) if in_host => {
            x.host()?
                .create_on_parent(&c.name, &c.kind, c.mtu, p, x.pod_fd)
                .await?
        }
        _ => {
            let parent = match parent_name {
                Some(p) => Some(
                    pod.get(p)
                        .copied()
                        .ok_or_else(|| missing("parent link", p))?,
                ),
                None => None,
            };
            let peer_ns = match c.kind {
                LinkKind::Veth { .. } => Some(x.host()?.veth_peer_ns(&c.name)?),
                _ => None,
            };
            x.pod
                .create_link(&c.name, &c.kind, c.mtu, parent, None, peer_ns)?
                .await?
        }
    }
    let link = x
        .pod
        .get_link(&c.name)
        .await?
        .ok_or_else(|| missing("created link", &c.name))?;
    x.pod
        .set_link(link.index, &c.name, None, Some(c.up), None, Some(&c.marker))?
        .await?;
    info!(netns = %x.pod.netns(), ifname = %c.name, kind = c.kind.kernel_kind(), "link created");
    let peer = match &c.kind {
        LinkKind::Veth { peer } => x.host()?.created_peer(&link, peer).await,
        _ => None,
    };
    Ok((link.index, peer))
}

/// The ownership record after a pass: the adopted record of the plan, updated with what
/// the writes did.
pub(crate) fn owned_after(mut owned: Owned, results: &[OpResult]) -> Owned {
    for r in results {
        let ok = !r.failed();
        match &r.op {
            Op::AddAddress { ifname, addr } if !ok => {
                owned.remove_address(ifname, &addr.to_string())
            }
            Op::DelAddress { ifname, addr } if ok => {
                owned.remove_address(ifname, &addr.to_string())
            }
            Op::CreateLink(c) if ok => {
                owned.links.insert(c.name.clone());
            }
            Op::DelLink { ifname } if ok => {
                owned.links.remove(ifname);
                owned.addresses.remove(ifname);
            }
            Op::AddRoute { route, .. } if !ok => {
                owned.routes.remove(&route.key);
            }
            _ => {}
        }
    }
    owned
}

mod libc_errno {
    use nix::errno::Errno;
    pub const ESRCH: i32 = Errno::ESRCH as i32;
    pub const ENOENT: i32 = Errno::ENOENT as i32;
    pub const ENODEV: i32 = Errno::ENODEV as i32;
    pub const EADDRNOTAVAIL: i32 = Errno::EADDRNOTAVAIL as i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_sent_to_a_link_whose_create_failed() {
        let t = Targets {
            pod: HashMap::new(),
            host_bridges: HashMap::new(),
            created_peers: HashMap::new(),
            failed_creates: ["v0".to_string()].into(),
        };
        let host_peer = Op::SetHostPeer {
            ifname: "v0".into(),
            peer: "victim0".into(),
            peer_index: None,
            bridge: Some("victimbr".into()),
            alias: "nes:peer:v0".into(),
        };
        let enslave = Op::SetLink {
            ifname: "eth1".into(),
            mtu: None,
            up: None,
            master: Some("v0".into()),
        };
        let address = Op::AddAddress {
            ifname: "v0".into(),
            addr: "10.0.0.5/24".parse().unwrap(),
        };
        for op in [&host_peer, &enslave, &address] {
            assert_eq!(t.failed_dependency(op), Some("v0"), "{op}");
        }
        let other = Op::AddAddress {
            ifname: "eth0".into(),
            addr: "10.0.0.5/24".parse().unwrap(),
        };
        assert_eq!(t.failed_dependency(&other), None);
    }

    #[test]
    fn a_failed_address_add_is_not_recorded_as_owned() {
        let mut owned = Owned::default();
        owned.add_address("eth0", "10.0.0.5/24".into());
        let results = vec![OpResult {
            op: Op::AddAddress {
                ifname: "eth0".into(),
                addr: "10.0.0.5/24".parse().unwrap(),
            },
            outcome: Outcome::Failed {
                errno: Some(17),
                message: "EEXIST".into(),
            },
        }];
        assert!(owned_after(owned, &results).addresses.is_empty());
    }
}
