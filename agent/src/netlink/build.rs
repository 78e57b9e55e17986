//! The RTM_NEWLINK message of each link kind nes creates (before MTU and namespace, which
//! every kind takes alike).

use std::net::IpAddr;
use std::os::fd::RawFd;

use rtnetlink::packet_route::link::{
    InfoData, InfoVeth, IpVlanMode, LinkMessage, MacVlanMode, VlanProtocol,
};
use rtnetlink::{LinkBridge, LinkIpVlan, LinkMacVlan, LinkUnspec, LinkVeth, LinkVlan, LinkVxlan};

use crate::error::{Error, Result};
use crate::plan::LinkKind;

/// The message creating link `name` of `kind`. `parent` is the index of the parent link in
/// the namespace of the socket; `peer_ns` is where a veth's peer goes.
pub(super) fn new_link(
    name: &str,
    kind: &LinkKind,
    parent: Option<u32>,
    peer_ns: Option<RawFd>,
) -> Result<LinkMessage> {
    let need_parent = || {
        parent.ok_or_else(|| Error::Conflict {
            object: format!("link {name}"),
            reason: "parent link not found".into(),
        })
    };
    Ok(match kind {
        LinkKind::Bridge => LinkBridge::new(name).build(),
        LinkKind::Veth { peer } => {
            let mut peer_msg = LinkUnspec::new_with_name(peer);
            if let Some(fd) = peer_ns {
                peer_msg = peer_msg.setns_by_fd(fd);
            }
            LinkVeth::new(name, peer)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
                .build()
        }
        LinkKind::Vlan { id, dot1ad, .. } => {
            let proto = if *dot1ad {
                VlanProtocol::Ieee8021Ad
            } else {
                VlanProtocol::Ieee8021Q
            };
            LinkVlan::new(name, need_parent()?, *id)
                .protocol(proto)
                .build()
        }
        LinkKind::Macvlan { mode, .. } => {
            LinkMacVlan::new(name, need_parent()?, macvlan_mode(*mode)).build()
        }
        LinkKind::Ipvlan { mode, .. } => {
            LinkIpVlan::new(name, need_parent()?, ipvlan_mode(*mode)).build()
        }
        LinkKind::Vxlan {
            vni,
            remote,
            local,
            group,
            port,
            parent: p,
        } => {
            let dev = match p {
                Some(_) => Some(need_parent()?),
                None => None,
            };
            let remote_or_group = [remote, group].into_iter().flatten();
            vxlan(name, *vni, remote_or_group, *local, *port, dev)
        }
    })
}

fn macvlan_mode(m: api::LinkMode) -> MacVlanMode {
    match m {
        api::LinkMode::Private => MacVlanMode::Private,
        api::LinkMode::Vepa => MacVlanMode::Vepa,
        api::LinkMode::Passthru => MacVlanMode::Passthrough,
        _ => MacVlanMode::Bridge,
    }
}

fn ipvlan_mode(m: api::LinkMode) -> IpVlanMode {
    match m {
        api::LinkMode::L3 => IpVlanMode::L3,
        api::LinkMode::L3s => IpVlanMode::L3S,
        _ => IpVlanMode::L2,
    }
}

/// A vxlan on UDP `port` (4789 unless given); the kernel keeps the unicast remote and the
/// multicast group in the same attribute.
fn vxlan<'a>(
    name: &str,
    vni: u32,
    remote_or_group: impl Iterator<Item = &'a IpAddr>,
    local: Option<IpAddr>,
    port: Option<u16>,
    dev: Option<u32>,
) -> LinkMessage {
    let mut b = LinkVxlan::new(name, vni).port(port.unwrap_or(4789));
    if let Some(dev) = dev {
        b = b.dev(dev);
    }
    for a in remote_or_group {
        b = match a {
            IpAddr::V4(v4) => b.group(*v4),
            IpAddr::V6(v6) => b.group6(*v6),
        };
    }
    if let Some(a) = local {
        b = match a {
            IpAddr::V4(v4) => b.local(v4),
            IpAddr::V6(v6) => b.local6(v6),
        };
    }
    b.build()
}
