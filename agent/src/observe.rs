//! Observed kernel state as plain structs. The netlink layer fills them; `plan` reads them.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

/// Prefix of the `IFLA_IFALIAS` marker nes puts on every link it creates.
pub const MARKER_PREFIX: &str = "nes:";

/// nes's own route protocol number (`rtm_protocol`).
///
/// 78 (0x4e, ASCII `N`) is unassigned in `/etc/iproute2/rt_protos` and in the kernel's
/// `RTPROT_*` list (which uses 0-4 and 8-19, then 42, 99, 186-192); `ip route` shows it as
/// `proto 78`. A route with this protocol was installed by nes, and nes only ever removes
/// routes with this protocol.
pub const NES_ROUTE_PROTOCOL: u8 = 78;

/// One link of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObservedLink {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, `vlan`, ...); `None` for kind-less devices like `lo`.
    pub kind: Option<String>,
    /// `IFLA_IFALIAS`; nes's marker starts with [`MARKER_PREFIX`].
    pub alias: Option<String>,
    pub mtu: u32,
    /// Administrative state (IFF_UP).
    pub admin_up: bool,
    /// Operational state as the kernel names it, lowercase (`up`, `down`, `lowerlayerdown`, ...).
    pub oper_state: String,
    pub mac: Option<String>,
    /// Index of the bridge this link is enslaved to.
    pub controller: Option<u32>,
    /// `IFLA_LINK`: for a veth, its peer's index (in the peer's namespace when
    /// `link_netnsid` is set).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer (or parent) lives in another namespace.
    pub link_netnsid: Option<i32>,
}

impl ObservedLink {
    /// Whether nes created this link (it carries nes's alias marker).
    pub fn is_nes(&self) -> bool {
        self.alias
            .as_deref()
            .is_some_and(|a| a.starts_with(MARKER_PREFIX))
    }
}

/// One interface address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ObservedAddress {
    pub index: u32,
    /// Local address with its prefix length, e.g. `10.0.0.5/24`.
    pub addr: IpNet,
}

/// One route (unicast, not in the local table).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ObservedRoute {
    pub dst: IpNet,
    pub table: u32,
    /// As the kernel reports it (IPv6 routes added with metric 0 show 1024).
    pub metric: u32,
    pub protocol: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// The source address the route prefers (`src`): removing that address takes the
    /// route (IPv4) or its `src` (IPv6) with it, unannounced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefsrc: Option<IpAddr>,
}

impl ObservedRoute {
    /// Whether nes installed this route.
    pub fn is_nes(&self) -> bool {
        self.protocol == NES_ROUTE_PROTOCOL
    }
}

/// Everything nes looks at in one pod network namespace (and the host links it touches).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub links: Vec<ObservedLink>,
    pub addresses: Vec<ObservedAddress>,
    pub routes: Vec<ObservedRoute>,
    /// Links of the host namespace (only dumped when the spec has host-side objects).
    pub host_links: Vec<ObservedLink>,
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&ObservedLink> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_by_index(&self, index: u32) -> Option<&ObservedLink> {
        self.links.iter().find(|l| l.index == index)
    }

    pub fn host_link(&self, name: &str) -> Option<&ObservedLink> {
        self.host_links.iter().find(|l| l.name == name)
    }

    /// The host end of the pod veth `pod_link`, found by the peer index the kernel gives
    /// for it (never by name), and only when it still bears the declared `peer` name.
    pub fn host_peer_of(&self, pod_link: &ObservedLink, peer: &str) -> Option<&ObservedLink> {
        let index = pod_link.link.filter(|_| pod_link.link_netnsid.is_some())?;
        self.host_links
            .iter()
            .find(|l| l.index == index && l.name == peer && l.kind.as_deref() == Some("veth"))
    }

    /// Addresses on the link with this index.
    pub fn addresses_of(&self, index: u32) -> impl Iterator<Item = IpNet> + '_ {
        self.addresses
            .iter()
            .filter(move |a| a.index == index)
            .map(|a| a.addr)
    }
}

/// Kernel metric of a route declared with `metric`: IPv6 turns 0 into 1024.
pub fn effective_metric(dst: &IpNet, metric: u32) -> u32 {
    match dst {
        IpNet::V6(_) if metric == 0 => 1024,
        _ => metric,
    }
}
