//! The host boundary: the one way into the host's network namespace. Every host-side
//! read and write of the engine goes through [`HostSide`], and every write is checked
//! against the node's [`HostAccess`] (deny-all unless the agent's flags allow it) right
//! before it is sent, on top of the planner refusing the same specs before any write.
//!
//! Host-side paths, and what guards each:
//! - a veth's peer end is created in the host ([`HostSide::veth_peer_ns`]): `veth` allowed;
//! - the peer is brought up, marked and enslaved ([`HostSide::set_peer`]): by the peer's
//!   index the kernel reported for the pod end, and only into an allowed bridge;
//! - a macvlan/ipvlan is created on a host parent and moved into the pod
//!   ([`HostSide::create_on_parent`]): the parent is allowed, `passthru` only if allowed;
//! - the host's links are dumped to plan the above ([`HostSide::links`]), read only.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use api::host::HostAccess;
use api::LinkMode;

use crate::error::{Error, Result};
use crate::netlink::{Netlink, Pending};
use crate::netns::NetnsExecutor;
use crate::observe::ObservedLink;
use crate::plan::LinkKind;

/// The host namespace, opened for one pod, with what that pod may do there.
#[derive(Debug)]
pub struct HostSide {
    ns: NetnsExecutor,
    netlink: Netlink,
    access: HostAccess,
}

impl HostSide {
    pub(crate) async fn open(path: &Path, access: HostAccess) -> Result<Self> {
        let ns = NetnsExecutor::spawn(path)?;
        let netlink = Netlink::open(&ns).await?;
        Ok(Self {
            ns,
            netlink,
            access,
        })
    }

    /// Netlink writes sent to the host so far.
    pub(crate) fn writes(&self) -> u64 {
        self.netlink.writes()
    }

    /// The host's links (read only).
    pub(crate) async fn links(&self) -> Result<Vec<ObservedLink>> {
        self.netlink.get_links().await
    }

    /// The host namespace a new veth's peer is created in, if veths are allowed.
    pub(crate) fn veth_peer_ns(&self, ifname: &str) -> Result<RawFd> {
        if !self.access.veth {
            return Err(refused(
                ifname,
                "a veth peer in the host namespace is not allowed on this node",
            ));
        }
        Ok(self.ns.file().as_raw_fd())
    }

    /// The host end of the veth `pod_link` just created: the index the kernel reports as
    /// its peer, confirmed in the host to be a veth named `peer` pointing back at it.
    pub(crate) async fn created_peer(&self, pod_link: &ObservedLink, peer: &str) -> Option<u32> {
        let index = pod_link.link.filter(|_| pod_link.link_netnsid.is_some())?;
        let h = self.netlink.get_link_by_index(index).await.ok()??;
        let ok =
            h.name == peer && h.kind.as_deref() == Some("veth") && h.link == Some(pod_link.index);
        if !ok {
            tracing::warn!(ifname = %pod_link.name, "the new veth's peer is not the link nes created; leaving the host alone");
        }
        ok.then_some(index)
    }

    /// Brings the host end `peer` (an index, see [`crate::plan::Op::SetHostPeer`]) of
    /// pod link `ifname` up, marks it and enslaves it to `bridge` (an allowed host
    /// bridge: its name and its index as observed) or releases it.
    pub(crate) fn set_peer(
        &self,
        ifname: &str,
        peer: u32,
        bridge: Option<(&str, u32)>,
        alias: &str,
    ) -> Result<Pending> {
        self.veth_peer_ns(ifname)?;
        let controller = match bridge {
            Some((name, _)) if !self.access.bridges.contains(name) => {
                return Err(refused(
                    ifname,
                    "its peerBridge is not allowed on this node",
                ))
            }
            Some((_, index)) => Some(index),
            None => None,
        };
        self.netlink.set_link(
            peer,
            &format!("host end of {ifname}"),
            None,
            Some(true),
            Some(controller),
            Some(alias),
        )
    }

    /// Creates `name` on the allowed host parent `parent` and moves it into the pod
    /// namespace `pod_fd` in the same request.
    pub(crate) async fn create_on_parent(
        &self,
        name: &str,
        kind: &LinkKind,
        mtu: Option<u32>,
        parent: &str,
        pod_fd: RawFd,
    ) -> Result<()> {
        if !self.access.parents.contains(parent) {
            return Err(refused(name, "its host parent is not allowed on this node"));
        }
        let passthru = matches!(
            kind,
            LinkKind::Macvlan {
                mode: LinkMode::Passthru,
                ..
            }
        );
        if passthru && !self.access.passthru {
            return Err(refused(
                name,
                "passthru on a host parent is not allowed on this node",
            ));
        }
        let index = self
            .netlink
            .get_link(parent)
            .await?
            .map(|l| l.index)
            .ok_or_else(|| Error::Conflict {
                object: format!("interface {name}"),
                reason: format!("host parent link {parent} not found (errno ENODEV)"),
            })?;
        self.netlink
            .create_link(name, kind, mtu, Some(index), Some(pod_fd), None)?
            .await
    }
}

fn refused(ifname: &str, why: &str) -> Error {
    Error::Conflict {
        object: format!("interface {ifname}"),
        reason: format!("host-side access refused: {why}"),
    }
}
