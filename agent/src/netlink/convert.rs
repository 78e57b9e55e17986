//! Raw netlink messages -> observed-state structs.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::observe::{ObservedAddress, ObservedLink, ObservedRoute};

/// The kernel's local table (never looked at).
const LOCAL_TABLE: u32 = 255;

/// One notification from the namespace's multicast groups, as plain structs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    NewLink(ObservedLink),
    DelLink(ObservedLink),
    NewAddress(ObservedAddress),
    DelAddress(ObservedAddress),
    NewRoute(ObservedRoute),
    DelRoute(ObservedRoute),
}

/// Maps a multicast message to a [`Change`]; other messages give `None`.
pub fn parse_event(msg: &NetlinkMessage<RouteNetlinkMessage>) -> Option<Change> {
    let NetlinkPayload::InnerMessage(inner) = &msg.payload else {
        return None;
    };
    change(inner)
}

/// Maps a link, address or route message (a notification, or an answer to a read) to a
/// [`Change`]; other messages give `None`.
pub(super) fn change(inner: &RouteNetlinkMessage) -> Option<Change> {
    Some(match inner {
        RouteNetlinkMessage::NewLink(m) => Change::NewLink(link(m)),
        RouteNetlinkMessage::DelLink(m) => Change::DelLink(link(m)),
        RouteNetlinkMessage::NewAddress(m) => Change::NewAddress(address(m)?),
        RouteNetlinkMessage::DelAddress(m) => Change::DelAddress(address(m)?),
        RouteNetlinkMessage::NewRoute(m) => Change::NewRoute(route(m)?),
        RouteNetlinkMessage::DelRoute(m) => Change::DelRoute(route(m)?),
        _ => return None,
    })
}

pub(super) fn link(m: &LinkMessage) -> ObservedLink {
    let mut l = ObservedLink {
        index: m.header.index,
        admin_up: m.header.flags.contains(LinkFlags::Up),
        oper_state: "unknown".into(),
        ..Default::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            LinkAttribute::Link(i) => l.link = Some(*i),
            LinkAttribute::LinkNetNsId(id) => l.link_netnsid = Some(*id),
            LinkAttribute::OperState(s) => l.oper_state = s.to_string().to_lowercase(),
            LinkAttribute::Address(mac) if mac.len() == 6 => {
                l.mac = Some(
                    mac.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                )
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

pub(super) fn address(m: &AddressMessage) -> Option<ObservedAddress> {
    let mut local = None;
    let mut addr = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(addr)?;
    Some(ObservedAddress {
        index: m.header.index,
        addr: IpNet::new(ip, m.header.prefix_len).ok()?,
    })
}

pub(super) fn route(m: &RouteMessage) -> Option<ObservedRoute> {
    let h = &m.header;
    if !matches!(h.address_family, AddressFamily::Inet | AddressFamily::Inet6)
        || h.kind != RouteType::Unicast
    {
        return None;
    }
    let v4 = h.address_family == AddressFamily::Inet;
    let mut table = u32::from(h.table);
    let mut dst: Option<IpAddr> = None;
    let mut r = ObservedRoute {
        dst: IpNet::default(),
        table: 0,
        metric: 0,
        protocol: u8::from(h.protocol),
        gateway: None,
        oif: None,
        prefsrc: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = ip(d),
            RouteAttribute::Gateway(g) => r.gateway = ip(g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::PrefSource(s) => r.prefsrc = ip(s),
            RouteAttribute::Priority(p) => r.metric = *p,
            _ => {}
        }
    }
    if table == LOCAL_TABLE {
        return None;
    }
    let dst = dst.unwrap_or(if v4 {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    });
    r.dst = IpNet::new(dst, h.destination_prefix_length).ok()?;
    r.table = table;
    Some(r)
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}
