//! The pure planner: desired spec + observed kernel state + ownership record -> operations.
//!
//! Nothing here does I/O; every decision about what to write is made here and unit-tested
//! without a kernel. Order of the returned operations: removals first, in reverse
//! dependency order (routes, addresses, links), then links, link settings (MTU, state,
//! master), host-side veth peers, addresses, routes.
//!
//! Ownership rules:
//! - a link is nes's if its alias starts with [`MARKER_PREFIX`]; nes deletes only those,
//!   and refuses to adopt a same-named link without the marker;
//! - a route is nes's if its protocol is [`NES_ROUTE_PROTOCOL`]; a declared route whose key
//!   is taken by someone else's route is reported, never replaced;
//! - an address is nes's if the [`Owned`] record lists it; nes never removes others.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

// Seeded like std's, but without SipHash's cost per small write: a plan of a thousand
// routes hashes several thousand keys, twice per request (the pass and its status).
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use api::host::HostAccess;
use api::{
    InterfaceSpec, InterfaceType, LinkMode, LinkState, NetworkConfigurationSpec, ObjectState,
    RouteKey,
};
use ipnet::IpNet;
use serde::Serialize;

use crate::observe::{
    effective_metric, Observed, ObservedLink, ObservedRoute, MARKER_PREFIX, NES_ROUTE_PROTOCOL,
};
use crate::owned::{Original, Owned};

/// A route's place in the kernel: destination, table and (effective) metric.
type RouteSlot = (IpNet, u32, u32);

/// What kind of link to create, with every parameter that cannot change without recreating it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum LinkKind {
    Bridge,
    /// This end stays in the pod, `peer` goes to the host namespace.
    Veth {
        peer: String,
    },
    Vlan {
        parent: String,
        id: u16,
        dot1ad: bool,
    },
    /// `in_host`: the parent is a host link; the link is created there and moved in.
    Macvlan {
        parent: String,
        mode: LinkMode,
        in_host: bool,
    },
    Ipvlan {
        parent: String,
        mode: LinkMode,
        in_host: bool,
    },
    Vxlan {
        vni: u32,
        remote: Option<IpAddr>,
        local: Option<IpAddr>,
        group: Option<IpAddr>,
        port: Option<u16>,
        parent: Option<String>,
    },
}

impl LinkKind {
    /// The kernel's `IFLA_INFO_KIND` for this kind.
    pub fn kernel_kind(&self) -> &'static str {
        match self {
            LinkKind::Bridge => "bridge",
            LinkKind::Veth { .. } => "veth",
            LinkKind::Vlan { .. } => "vlan",
            LinkKind::Macvlan { .. } => "macvlan",
            LinkKind::Ipvlan { .. } => "ipvlan",
            LinkKind::Vxlan { .. } => "vxlan",
        }
    }

    /// A parent link inside the pod namespace this link needs, if any.
    pub fn pod_parent(&self) -> Option<&str> {
        match self {
            LinkKind::Vlan { parent, .. } => Some(parent),
            LinkKind::Macvlan {
                parent,
                in_host: false,
                ..
            }
            | LinkKind::Ipvlan {
                parent,
                in_host: false,
                ..
            } => Some(parent),
            LinkKind::Vxlan { parent, .. } => parent.as_deref(),
            _ => None,
        }
    }

    /// The alias marker: `nes:` + kind + the creation parameters, so a change of any of
    /// them is seen as a different link and the link is recreated.
    pub fn marker(&self) -> String {
        let mut s = format!("{MARKER_PREFIX}{}", self.kernel_kind());
        let mut kv = |k: &str, v: &dyn fmt::Display| {
            s.push_str(&format!(
                "{}{k}={v}",
                if s.contains('=') { "," } else { ":" }
            ))
        };
        match self {
            LinkKind::Bridge => {}
            LinkKind::Veth { peer } => kv("peer", peer),
            LinkKind::Vlan { parent, id, dot1ad } => {
                kv("parent", parent);
                kv("id", id);
                kv("proto", &if *dot1ad { "802.1ad" } else { "802.1Q" });
            }
            LinkKind::Macvlan {
                parent,
                mode,
                in_host,
            }
            | LinkKind::Ipvlan {
                parent,
                mode,
                in_host,
            } => {
                kv("parent", parent);
                kv("mode", &format!("{mode:?}").to_lowercase());
                if *in_host {
                    kv("host", &1);
                }
            }
            LinkKind::Vxlan {
                vni,
                remote,
                local,
                group,
                port,
                parent,
            } => {
                kv("vni", vni);
                if let Some(v) = remote {
                    kv("remote", v);
                }
                if let Some(v) = local {
                    kv("local", v);
                }
                if let Some(v) = group {
                    kv("group", v);
                }
                kv("port", &port.unwrap_or(4789));
                if let Some(v) = parent {
                    kv("dev", v);
                }
            }
        }
        s
    }
}

/// A link to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkCreate {
    pub name: String,
    pub kind: LinkKind,
    pub mtu: Option<u32>,
    /// Bring the link up right after creating it.
    pub up: bool,
    /// Alias marker to set ([`LinkKind::marker`]).
    pub marker: String,
}

/// A route as nes writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTarget {
    /// The declared key (for reporting).
    pub key: RouteKey,
    pub dst: IpNet,
    pub table: u32,
    /// Metric to write (0 lets the kernel pick its default).
    pub metric: u32,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
}

/// One netlink write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum Op {
    DelRoute(RouteTarget),
    DelAddress {
        ifname: String,
        addr: IpNet,
    },
    DelLink {
        ifname: String,
    },
    CreateLink(LinkCreate),
    /// Change settings of a pod link; `None` fields are left alone.
    SetLink {
        ifname: String,
        mtu: Option<u32>,
        up: Option<bool>,
        master: Option<String>,
    },
    /// Bring the host end of a veth up, mark it, enslave it to `bridge` (or release it).
    /// The host end is found by index, never by name: `peer_index` for a kept veth (the
    /// peer index its pod end reports), `None` for one created in this pass (the executor
    /// takes the peer index of the link it just created, or refuses).
    SetHostPeer {
        ifname: String,
        peer: String,
        peer_index: Option<u32>,
        bridge: Option<String>,
        alias: String,
    },
    AddAddress {
        ifname: String,
        addr: IpNet,
    },
    /// Add a route; `replace` swaps nes's own route with the same key for the new one.
    AddRoute {
        route: RouteTarget,
        replace: bool,
    },
}

impl Op {
    /// The declared object this write is for.
    pub fn object(&self) -> ObjectRef {
        match self {
            Op::DelRoute(r) | Op::AddRoute { route: r, .. } => ObjectRef::Route(r.key.clone()),
            Op::DelAddress { ifname, addr } | Op::AddAddress { ifname, addr } => {
                ObjectRef::Address {
                    ifname: ifname.clone(),
                    addr: addr.to_string(),
                }
            }
            Op::DelLink { ifname }
            | Op::SetLink { ifname, .. }
            | Op::SetHostPeer { ifname, .. } => ObjectRef::Interface(ifname.clone()),
            Op::CreateLink(c) => ObjectRef::Interface(c.name.clone()),
        }
    }

    /// Short verb, for errors and logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Op::DelRoute(_) => "delete route",
            Op::DelAddress { .. } => "delete address",
            Op::DelLink { .. } => "delete link",
            Op::CreateLink(_) => "create link",
            Op::SetLink { .. } => "set link",
            Op::SetHostPeer { .. } => "set host peer",
            Op::AddAddress { .. } => "add address",
            Op::AddRoute { replace: false, .. } => "add route",
            Op::AddRoute { replace: true, .. } => "replace route",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::DelRoute(r) => write!(f, "route del {}", r.key),
            Op::DelAddress { ifname, addr } => write!(f, "address del {addr} dev {ifname}"),
            Op::DelLink { ifname } => write!(f, "link del {ifname}"),
            Op::CreateLink(c) => {
                write!(f, "link add {} ({})", c.name, c.marker)?;
                if let Some(mtu) = c.mtu {
                    write!(f, " mtu {mtu}")?;
                }
                write!(f, " {}", if c.up { "up" } else { "down" })
            }
            Op::SetLink {
                ifname,
                mtu,
                up,
                master,
            } => {
                write!(f, "link set {ifname}")?;
                if let Some(m) = mtu {
                    write!(f, " mtu {m}")?;
                }
                if let Some(m) = master {
                    write!(f, " master {m}")?;
                }
                if let Some(up) = up {
                    write!(f, " {}", if *up { "up" } else { "down" })?;
                }
                Ok(())
            }
            Op::SetHostPeer {
                ifname,
                peer,
                bridge,
                ..
            } => {
                write!(f, "host link set {peer} (peer of {ifname}) up")?;
                match bridge {
                    Some(b) => write!(f, " master {b}"),
                    None => write!(f, " nomaster"),
                }
            }
            Op::AddAddress { ifname, addr } => write!(f, "address add {addr} dev {ifname}"),
            Op::AddRoute { route, replace } => {
                write!(
                    f,
                    "route {} {}",
                    if *replace { "replace" } else { "add" },
                    route.dst
                )?;
                if let Some(v) = route.via {
                    write!(f, " via {v}")?;
                }
                if let Some(d) = &route.dev {
                    write!(f, " dev {d}")?;
                }
                write!(
                    f,
                    " table {} metric {} proto {NES_ROUTE_PROTOCOL}",
                    route.table, route.metric
                )
            }
        }
    }
}

/// A declared object, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ObjectRef {
    Interface(String),
    Address { ifname: String, addr: String },
    Route(RouteKey),
}

impl ObjectRef {
    /// The interface whose status carries this object's state (addresses belong to theirs).
    pub fn interface(&self) -> Option<&str> {
        match self {
            ObjectRef::Interface(n) | ObjectRef::Address { ifname: n, .. } => Some(n),
            ObjectRef::Route(_) => None,
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Interface(n) => write!(f, "interface {n}"),
            ObjectRef::Address { ifname, addr } => write!(f, "address {addr} on {ifname}"),
            ObjectRef::Route(k) => write!(f, "route {k}"),
        }
    }
}

/// A declared object the planner cannot act on now, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blocked {
    pub object: ObjectRef,
    /// `Pending` when it may resolve by itself (a missing `existing` link), `Failed` when a
    /// person must act (a name taken by a link nes did not create).
    pub state: ObjectState,
    pub reason: String,
}

/// The result of [`plan`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Writes, in execution order.
    pub ops: Vec<Op>,
    /// Declared objects no write can fix now.
    pub blocked: Vec<Blocked>,
    /// Ownership as it stands before `ops` run (the adopted state): links with nes's
    /// marker, routes with nes's protocol, recorded addresses still relevant.
    pub owned: Owned,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What one declared interface resolves to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LinkFate {
    /// Exists and is kept: its addresses and routes are compared with the kernel's.
    Keep(u32),
    /// Will be created (or recreated): everything on it is added.
    Create,
    /// Cannot be used now.
    Blocked,
}

/// Computes the writes that take `observed` to `desired`, touching only what `owned` and the
/// kernel markers say nes owns, and nothing in the host that `access` does not allow.
/// `desired` must have passed `api::validate`.
pub fn plan(
    desired: &NetworkConfigurationSpec,
    observed: &Observed,
    owned: &Owned,
    access: &HostAccess,
) -> Plan {
    run(Planning::new(desired, observed, owned, access, true))
}

/// [`plan`]'s writes and blocked objects without its ownership record (`owned` is left
/// empty): what a status compares against. The record is a set entry per address and
/// route, about a third of a plan's cost, and a status is built after every pass.
pub fn pending(
    desired: &NetworkConfigurationSpec,
    observed: &Observed,
    owned: &Owned,
    access: &HostAccess,
) -> Plan {
    run(Planning::new(desired, observed, owned, access, false))
}

fn run(mut s: Planning<'_>) -> Plan {
    s.links();
    s.undeclared_links();
    s.follow_parents();
    s.mtu_limits();
    s.wait_for_parents();
    s.link_settings();
    s.restore_originals();
    s.order_settings();
    s.addresses();
    s.routes();
    s.p.finish(s.adopted.unwrap_or_default())
}

/// One planning pass: the inputs, what has been decided about each declared link, and the
/// writes collected so far. Each method is one phase, run in the order [`plan`] calls them.
struct Planning<'a> {
    desired: &'a NetworkConfigurationSpec,
    observed: &'a Observed,
    owned: &'a Owned,
    access: &'a HostAccess,
    declared: HashMap<&'a str, &'a InterfaceSpec>,
    p: Planner,
    /// Ownership once the writes succeed (see [`Plan::owned`]); `None` when not asked for.
    adopted: Option<Owned>,
    fate: HashMap<&'a str, LinkFate>,
    creates: Vec<LinkCreate>,
    /// Kept nes links, with what it takes to create them again.
    kept: BTreeMap<&'a str, LinkCreate>,
    /// Indices and names of nes links deleted to be created again.
    recreated: HashSet<u32>,
    recreated_names: HashSet<&'a str>,
    /// Indices and names of nes links deleted for good (or with their parent).
    deleted: HashSet<u32>,
    deleted_names: HashSet<&'a str>,
    /// Everything `recreated` and `deleted`: what lives on these goes with them.
    gone: HashSet<u32>,
    /// Links whose declared MTU is above their parent's and is not set.
    mtu_refused: HashSet<&'a str>,
    /// Links created at their parent's MTU and raised after the parent is.
    mtu_after_parent: HashSet<&'a str>,
}

impl<'a> Planning<'a> {
    fn new(
        desired: &'a NetworkConfigurationSpec,
        observed: &'a Observed,
        owned: &'a Owned,
        access: &'a HostAccess,
        adopt: bool,
    ) -> Self {
        Self {
            desired,
            observed,
            owned,
            access,
            declared: desired
                .interfaces
                .iter()
                .map(|i| (i.name.as_str(), i))
                .collect(),
            p: Planner::default(),
            adopted: adopt.then(Owned::default),
            fate: HashMap::new(),
            creates: Vec::new(),
            kept: BTreeMap::new(),
            recreated: HashSet::new(),
            recreated_names: HashSet::new(),
            deleted: HashSet::new(),
            deleted_names: HashSet::new(),
            gone: HashSet::new(),
            mtu_refused: HashSet::new(),
            mtu_after_parent: HashSet::new(),
        }
    }

    /// Records in the adopted ownership, when the plan keeps one.
    fn adopt<T>(&mut self, record: impl FnOnce(&mut Owned) -> T) {
        if let Some(a) = self.adopted.as_mut() {
            record(a);
        }
    }

    /// What becomes of each declared link: kept, created (or recreated), or blocked.
    fn links(&mut self) {
        for iface in &self.desired.interfaces {
            let fate = self.link_fate(iface);
            self.fate.insert(iface.name.as_str(), fate);
        }
    }

    /// One declared link's fate: host access first, then an existing link or one nes makes.
    fn link_fate(&mut self, iface: &'a InterfaceSpec) -> LinkFate {
        let name = iface.name.as_str();
        let refused = self.access.interface_problems(iface);
        if !refused.is_empty() {
            // Neither created nor deleted: a link nes made before stays as it is.
            let why: Vec<String> = refused.into_iter().map(|(_, m)| m).collect();
            self.p.block(
                ObjectRef::Interface(name.into()),
                ObjectState::Failed,
                format!("host-side access refused: {}", why.join("; ")),
            );
            return LinkFate::Blocked;
        }
        match (iface.kind, self.observed.link(name)) {
            (InterfaceType::Existing, Some(l)) => LinkFate::Keep(l.index),
            (InterfaceType::Existing, None) => {
                self.p.block(
                    ObjectRef::Interface(name.into()),
                    ObjectState::Pending,
                    format!("link {name} does not exist (type existing: nes does not create it)"),
                );
                LinkFate::Blocked
            }
            (_, seen) => self.made_link_fate(iface, seen),
        }
    }

    /// The fate of a link nes makes: created, kept if its marker and host peer match,
    /// recreated if nes made it otherwise, blocked if someone else's link has its name.
    fn made_link_fate(
        &mut self,
        iface: &'a InterfaceSpec,
        seen: Option<&ObservedLink>,
    ) -> LinkFate {
        let name = iface.name.as_str();
        let observed = self.observed;
        let Some(kind) = link_kind(iface) else {
            self.p.block(
                ObjectRef::Interface(name.into()),
                ObjectState::Failed,
                "incomplete interface (not validated?)".into(),
            );
            return LinkFate::Blocked;
        };
        let marker = kind.marker();
        let up = iface.state != Some(LinkState::Down);
        let create = LinkCreate {
            name: name.into(),
            kind,
            mtu: iface.mtu,
            up,
            marker,
        };
        if !peer_name_free(&create.kind, seen, observed) {
            self.p.block(
                ObjectRef::Interface(name.into()),
                ObjectState::Failed,
                format!("the peer name of {name} is taken in the host namespace by a link nes did not create for {name}; refusing to create or touch it (choose another peer name)"),
            );
            return LinkFate::Blocked;
        }
        match seen {
            None => {
                self.creates.push(create);
                LinkFate::Create
            }
            Some(l)
                if l.alias.as_deref() == Some(create.marker.as_str())
                    && host_peer_ok(&create.kind, l, observed) =>
            {
                self.adopt(|a| a.links.insert(name.into()));
                self.kept.insert(name, create);
                LinkFate::Keep(l.index)
            }
            Some(l) if l.is_nes() => {
                self.p.removals_links.push(Op::DelLink {
                    ifname: name.into(),
                });
                self.recreated.insert(l.index);
                self.recreated_names.insert(name);
                self.creates.push(create);
                LinkFate::Create
            }
            Some(l) => {
                self.p.block(
                    ObjectRef::Interface(name.into()),
                    ObjectState::Failed,
                    format!("link {name} already exists and was not created by nes (kind {}, no nes marker); refusing to take it over", l.kind.as_deref().unwrap_or("none")),
                );
                LinkFate::Blocked
            }
        }
    }

    /// Links nes created that are no longer declared are deleted.
    fn undeclared_links(&mut self) {
        let observed = self.observed;
        for l in &observed.links {
            if l.is_nes() && !self.declared.contains_key(l.name.as_str()) {
                self.p.removals_links.push(Op::DelLink {
                    ifname: l.name.clone(),
                });
                self.deleted.insert(l.index);
                self.deleted_names.insert(l.name.as_str());
            }
        }
    }

    /// The children of recreated or deleted parents.
    fn follow_parents(&mut self) {
        // The kernel deletes a link's VLAN, macvlan, ipvlan and vxlan uppers with it, so a kept
        // child of a recreated parent is recreated in the same pass, and one of a deleted parent
        // waits; down the whole chain.
        loop {
            let orphaned: Vec<(&str, u32, bool)> = self
                .kept
                .iter()
                .filter_map(|(name, c)| {
                    let parent = c.kind.pod_parent()?;
                    let Some(LinkFate::Keep(idx)) = self.fate.get(name) else {
                        return None;
                    };
                    if self.recreated_names.contains(parent) {
                        Some((*name, *idx, true))
                    } else if self.deleted_names.contains(parent) {
                        Some((*name, *idx, false))
                    } else {
                        None
                    }
                })
                .collect();
            if orphaned.is_empty() {
                break;
            }
            for (name, idx, recreate) in orphaned {
                self.adopt(|a| a.links.remove(name));
                let Some(c) = self.kept.remove(name) else {
                    continue;
                };
                if recreate {
                    // Deleted explicitly, before its parent, so the pass does not depend on
                    // the kernel's cascade; a child already gone counts as deleted.
                    self.p.removals_links.insert(
                        0,
                        Op::DelLink {
                            ifname: name.into(),
                        },
                    );
                    self.recreated.insert(idx);
                    self.recreated_names.insert(name);
                    self.creates.push(c);
                    self.fate.insert(name, LinkFate::Create);
                } else {
                    self.deleted.insert(idx);
                    self.deleted_names.insert(name);
                    self.p.block(
                        ObjectRef::Interface(name.into()),
                        ObjectState::Pending,
                        format!(
                            "its parent link {} is being removed",
                            c.kind.pod_parent().unwrap_or_default()
                        ),
                    );
                    self.fate.insert(name, LinkFate::Blocked);
                }
            }
        }
        self.gone = self.deleted.union(&self.recreated).copied().collect();
    }

    /// MTUs the kernel would refuse, decided before any write.
    fn mtu_limits(&mut self) {
        let (desired, observed) = (self.desired, self.observed);
        // MTU limits the kernel enforces: a VLAN, macvlan or ipvlan cannot be larger than its
        // parent. The declared parent MTU is checked by `api::validate`; the kernel's is here.
        for iface in &desired.interfaces {
            let name = iface.name.as_str();
            let (Some(mtu), Some(parent)) = (iface.mtu, mtu_bounded_by(iface)) else {
                continue;
            };
            let parent_now = observed
                .link(parent)
                .filter(|l| !self.gone.contains(&l.index));
            let parent_mtu = self
                .declared
                .get(parent)
                .and_then(|d| d.mtu)
                .or(parent_now.map(|l| l.mtu));
            match parent_mtu {
                Some(limit) if mtu > limit => {
                    self.p.block(
                        ObjectRef::Interface(name.into()),
                        ObjectState::Failed,
                        format!(
                            "MTU {mtu} is above the MTU {limit} of its parent {parent}: a {} cannot be larger than the link it runs on",
                            iface.kind.as_str()
                        ),
                    );
                    self.mtu_refused.insert(name);
                    if self.fate.get(name) == Some(&LinkFate::Create) {
                        self.fate.insert(name, LinkFate::Blocked);
                    }
                }
                // The parent is raised in this pass: create at the parent's MTU, then raise.
                Some(_) if parent_now.is_some_and(|l| mtu > l.mtu) => {
                    self.mtu_after_parent.insert(name);
                }
                _ => {}
            }
        }
    }

    /// Children wait for a blocked parent; the rest are created parent first.
    fn wait_for_parents(&mut self) {
        let observed = self.observed;
        // Children wait for a blocked parent, down the whole chain.
        loop {
            let waiting: Vec<(String, String)> = self
                .creates
                .iter()
                .filter(|c| self.fate.get(c.name.as_str()) == Some(&LinkFate::Create))
                .filter_map(|c| {
                    let parent = c.kind.pod_parent()?;
                    let parent_ok = match self.fate.get(parent) {
                        Some(LinkFate::Blocked) => false,
                        Some(_) => true,
                        None => {
                            observed.link(parent).is_some() && !self.deleted_names.contains(parent)
                        }
                    };
                    (!parent_ok).then(|| (c.name.clone(), parent.to_string()))
                })
                .collect();
            if waiting.is_empty() {
                break;
            }
            for (name, parent) in waiting {
                self.p.block(
                    ObjectRef::Interface(name.clone()),
                    ObjectState::Pending,
                    format!("parent link {parent} is not available"),
                );
                if let Some(n) = self.declared.get_key_value(name.as_str()).map(|(k, _)| *k) {
                    self.fate.insert(n, LinkFate::Blocked);
                }
            }
        }
        self.creates
            .retain(|c| self.fate.get(c.name.as_str()) == Some(&LinkFate::Create));
        for c in &mut self.creates {
            if self.mtu_after_parent.contains(c.name.as_str()) {
                c.mtu = None;
            }
        }
        self.p.creates.extend(
            creation_order(std::mem::take(&mut self.creates))
                .into_iter()
                .map(Op::CreateLink),
        );
    }

    /// MTU, state and master of every usable link; host ends of veths.
    fn link_settings(&mut self) {
        let (desired, observed, owned) = (self.desired, self.observed, self.owned);
        for iface in &desired.interfaces {
            let name = iface.name.as_str();
            let f = self.fate.get(name).copied().unwrap_or(LinkFate::Blocked);
            let seen = match f {
                LinkFate::Keep(idx) => observed.link_by_index(idx),
                _ => None,
            };
            if f == LinkFate::Blocked {
                continue;
            }
            let mut mtu = iface
                .mtu
                .filter(|_| !self.mtu_refused.contains(name))
                .filter(|m| match seen {
                    Some(l) => l.mtu != *m,
                    None => self.mtu_after_parent.contains(name),
                });
            let want_up = match (iface.kind, iface.state) {
                (_, Some(s)) => Some(s == LinkState::Up),
                (InterfaceType::Existing, None) => None,
                (_, None) => Some(true),
            };
            let mut up = want_up.filter(|u| seen.is_some_and(|l| l.admin_up != *u));
            if let (InterfaceType::Existing, Some(l)) = (iface.kind, seen) {
                let (restore, record) = originals(iface.mtu, want_up, l, owned.originals.get(name));
                mtu = mtu.or(restore.mtu);
                up = up.or(restore.up);
                if let Some(record) = record {
                    self.adopt(|a| a.originals.insert(name.into(), record));
                }
            }
            let master = iface.master.clone().filter(|m| {
                let target = match self.fate.get(m.as_str()) {
                    Some(LinkFate::Keep(idx)) => Some(*idx),
                    _ => None,
                };
                f == LinkFate::Create
                    || target.is_none()
                    || seen.and_then(|l| l.controller) != target
            });
            if mtu.is_some() || up.is_some() || master.is_some() {
                self.p.settings.push(Op::SetLink {
                    ifname: name.into(),
                    mtu,
                    up,
                    master,
                });
            }
            if let (Some(peer), InterfaceType::Veth) = (&iface.peer, iface.kind) {
                let alias = format!("{MARKER_PREFIX}peer:{name}");
                let host = seen.and_then(|l| observed.host_peer_of(l, peer));
                let bridge_idx = iface
                    .peer_bridge
                    .as_deref()
                    .map(|b| observed.host_link(b).map(|l| l.index));
                let ok = host.is_some_and(|h| {
                    h.admin_up
                        && h.alias.as_deref() == Some(alias.as_str())
                        && match bridge_idx {
                            None => h.controller.is_none(),
                            Some(Some(bi)) => h.controller == Some(bi),
                            Some(None) => false,
                        }
                });
                if !ok {
                    self.p.host.push(Op::SetHostPeer {
                        ifname: name.into(),
                        peer: peer.clone(),
                        peer_index: host.map(|h| h.index),
                        bridge: iface.peer_bridge.clone(),
                        alias,
                    });
                }
            }
        }
    }

    /// Links nes changed but no longer manages get their own settings back.
    fn restore_originals(&mut self) {
        let (observed, owned) = (self.observed, self.owned);
        for (name, prev) in &owned.originals {
            let Some(l) = observed
                .link(name)
                .filter(|_| !self.declared.contains_key(name.as_str()))
            else {
                continue;
            };
            let (restore, record) = originals(None, None, l, Some(prev));
            if let Some(record) = record {
                self.adopt(|a| a.originals.insert(name.clone(), record));
                self.p.settings.push(Op::SetLink {
                    ifname: name.clone(),
                    mtu: restore.mtu,
                    up: restore.up,
                    master: None,
                });
            }
        }
    }

    /// A parent's MTU changes before its children's (a child cannot exceed its parent).
    fn order_settings(&mut self) {
        self.p.settings.sort_by_key(|op| match op {
            Op::SetLink { ifname, .. } => depth(ifname, &self.declared),
            _ => 0,
        });
    }

    /// Declared addresses added; recorded ones no longer declared removed.
    fn addresses(&mut self) {
        let (desired, observed, owned) = (self.desired, self.observed, self.owned);
        let mut desired_addrs: HashSet<(&str, IpNet)> = HashSet::new();
        for iface in &desired.interfaces {
            let name = iface.name.as_str();
            let f = self.fate.get(name).copied().unwrap_or(LinkFate::Blocked);
            let present: BTreeSet<IpNet> = match f {
                LinkFate::Keep(idx) => observed.addresses_of(idx).collect(),
                _ => BTreeSet::new(),
            };
            for a in &iface.addresses {
                let Some(net) = api::validate::net(a) else {
                    continue;
                };
                desired_addrs.insert((name, net));
                // Validated text is canonical: it is the address's identity as recorded.
                // Copied only where it is kept (not for a status's plan, which keeps none).
                match f {
                    LinkFate::Blocked => self.p.block(
                        ObjectRef::Address {
                            ifname: name.into(),
                            addr: a.clone(),
                        },
                        ObjectState::Pending,
                        format!("waiting for interface {name}"),
                    ),
                    _ if present.contains(&net) => self.adopt(|o| {
                        if owned.owns_address(name, a) {
                            o.add_address(name, a.clone());
                        }
                    }),
                    _ => {
                        self.adopt(|o| o.add_address(name, a.clone()));
                        self.p.addresses.push(Op::AddAddress {
                            ifname: name.into(),
                            addr: net,
                        });
                    }
                }
            }
        }
        for (ifname, set) in &owned.addresses {
            let Some(link) = observed.link(ifname) else {
                continue;
            };
            if self.gone.contains(&link.index) {
                continue;
            }
            let present: HashSet<IpNet> = observed.addresses_of(link.index).collect();
            for cidr in set {
                let Some(net) = api::validate::net(cidr) else {
                    continue;
                };
                if desired_addrs.contains(&(ifname.as_str(), net)) {
                    continue;
                }
                if present.contains(&net) {
                    self.adopt(|a| a.add_address(ifname, cidr.clone()));
                    self.p.removals_addresses.push(Op::DelAddress {
                        ifname: ifname.clone(),
                        addr: net,
                    });
                }
            }
        }
    }

    /// Declared routes added or replaced; nes routes no longer declared removed.
    fn routes(&mut self) {
        let declared = self.declared_routes();
        self.undeclared_routes(&declared);
    }

    /// Each declared route added, replaced, kept or blocked; returns their slots.
    fn declared_routes(&mut self) -> HashSet<RouteSlot> {
        let (desired, observed) = (self.desired, self.observed);
        // Each slot's first route and first of nes's, of links that stay (no list per slot:
        // a pod may hold a thousand routes).
        let mut by_key: HashMap<(IpNet, u32, u32), Slot<'_>> =
            HashMap::with_capacity(observed.routes.len());
        for o in &observed.routes {
            if o.oif.is_some_and(|i| self.gone.contains(&i)) {
                continue;
            }
            let slot = by_key.entry((o.dst, o.table, o.metric)).or_insert(Slot {
                first: o,
                ours: None,
            });
            if o.is_nes() && slot.ours.is_none() {
                slot.ours = Some(o);
            }
        }
        let mut desired_keys: HashSet<RouteSlot> = HashSet::with_capacity(desired.routes.len());
        for r in &desired.routes {
            let Some(dst) = api::validate::net(&r.dst) else {
                continue;
            };
            let via = r.via.as_deref().and_then(|v| v.parse::<IpAddr>().ok());
            let metric = effective_metric(&dst, r.metric);
            desired_keys.insert((dst, r.table, metric));
            let dev_fate = r
                .dev
                .as_deref()
                .map(|d| self.fate.get(d).copied().unwrap_or(LinkFate::Blocked));
            if dev_fate == Some(LinkFate::Blocked) {
                let dev = r.dev.as_deref().unwrap_or_default();
                self.p.block(
                    ObjectRef::Route(r.key()),
                    ObjectState::Pending,
                    format!("waiting for interface {dev}"),
                );
                continue;
            }
            let slot = by_key.get(&(dst, r.table, metric)).copied();
            self.route(r, dst, via, dev_fate, slot);
        }
        desired_keys
    }

    /// One declared route against the routes in its slot: nes's own is kept (or replaced
    /// when its gateway or device differ), anyone else's blocks it. Its key and target are
    /// made only where they are kept or written: a status's plan of a converged pod makes
    /// none for its thousand routes.
    fn route(
        &mut self,
        r: &api::RouteSpec,
        dst: IpNet,
        via: Option<IpAddr>,
        dev_fate: Option<LinkFate>,
        slot: Option<Slot<'_>>,
    ) {
        let target = |key: RouteKey| RouteTarget {
            key,
            dst,
            table: r.table,
            metric: r.metric,
            via,
            dev: r.dev.clone(),
        };
        match (slot.and_then(|s| s.ours), slot.map(|s| s.first)) {
            (Some(o), _) => {
                self.adopt(|a| a.routes.insert(r.key()));
                let dev_ok = match dev_fate {
                    None => true,
                    Some(LinkFate::Keep(idx)) => o.oif == Some(idx),
                    Some(_) => false,
                };
                if o.gateway != via || !dev_ok {
                    let route = target(r.key());
                    self.p.routes.push(Op::AddRoute { route, replace: true });
                }
            }
            (None, Some(o)) => self.p.block(
                ObjectRef::Route(r.key()),
                ObjectState::Failed,
                format!("a route {} table {} metric {} already exists and was not installed by nes (proto {}); refusing to replace it", o.dst, o.table, o.metric, o.protocol),
            ),
            (None, None) => {
                let key = r.key();
                self.adopt(|a| a.routes.insert(key.clone()));
                self.p.routes.push(Op::AddRoute { route: target(key), replace: false });
            }
        }
    }

    /// nes routes no longer declared are removed, unless their link takes them along.
    fn undeclared_routes(&mut self, declared: &HashSet<RouteSlot>) {
        let observed = self.observed;
        for o in &observed.routes {
            if !o.is_nes() || declared.contains(&(o.dst, o.table, o.metric)) {
                continue;
            }
            if o.oif.is_some_and(|i| self.gone.contains(&i)) {
                continue; // removed with its link
            }
            let key = RouteKey {
                dst: o.dst.to_string(),
                table: o.table,
                metric: o.metric,
            };
            self.p.removals_routes.push(Op::DelRoute(RouteTarget {
                key,
                dst: o.dst,
                table: o.table,
                metric: o.metric,
                via: o.gateway,
                dev: o
                    .oif
                    .and_then(|i| observed.link_by_index(i))
                    .map(|l| l.name.clone()),
            }));
        }
    }
}

/// The routes observed in one route slot (destination, table, metric).
#[derive(Clone, Copy)]
struct Slot<'a> {
    first: &'a ObservedRoute,
    ours: Option<&'a ObservedRoute>,
}

#[derive(Default)]
struct Planner {
    removals_routes: Vec<Op>,
    removals_addresses: Vec<Op>,
    removals_links: Vec<Op>,
    creates: Vec<Op>,
    settings: Vec<Op>,
    host: Vec<Op>,
    addresses: Vec<Op>,
    routes: Vec<Op>,
    blocked: Vec<Blocked>,
}

impl Planner {
    fn block(&mut self, object: ObjectRef, state: ObjectState, reason: String) {
        self.blocked.push(Blocked {
            object,
            state,
            reason,
        });
    }

    fn finish(self, owned: Owned) -> Plan {
        let ops = [
            self.removals_routes,
            self.removals_addresses,
            self.removals_links,
            self.creates,
            self.settings,
            self.host,
            self.addresses,
            self.routes,
        ]
        .into_iter()
        .flatten()
        .collect();
        Plan {
            ops,
            blocked: self.blocked,
            owned,
        }
    }
}

/// For a link nes did not create: which of its original settings to put back now (those
/// nes changed and no longer manages), and the record of originals to keep. A setting is
/// recorded the first time nes changes it, and forgotten once it is back.
fn originals(
    want_mtu: Option<u32>,
    want_up: Option<bool>,
    seen: &ObservedLink,
    prev: Option<&Original>,
) -> (Original, Option<Original>) {
    let prev = prev.cloned().unwrap_or_default();
    let mut restore = Original::default();
    let mut record = Original::default();
    match want_mtu {
        Some(m) if m != seen.mtu => record.mtu = Some(prev.mtu.unwrap_or(seen.mtu)),
        Some(_) => record.mtu = prev.mtu,
        None => {
            restore.mtu = prev.mtu.filter(|o| *o != seen.mtu);
            record.mtu = restore.mtu;
        }
    }
    match want_up {
        Some(u) if u != seen.admin_up => record.up = Some(prev.up.unwrap_or(seen.admin_up)),
        Some(_) => record.up = prev.up,
        None => {
            restore.up = prev.up.filter(|o| *o != seen.admin_up);
            record.up = restore.up;
        }
    }
    (restore, (record != Original::default()).then_some(record))
}

/// Links in creation order: each after the pod parent it runs on.
fn creation_order(mut pending: Vec<LinkCreate>) -> Vec<LinkCreate> {
    let mut ordered = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let names: HashSet<String> = pending.iter().map(|c| c.name.clone()).collect();
        let (ready, rest): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|c| c.kind.pod_parent().is_none_or(|pp| !names.contains(pp)));
        if ready.is_empty() {
            // A parent loop; `api::validate` refuses those, keep the declared order.
            ordered.extend(rest);
            break;
        }
        ordered.extend(ready);
        pending = rest;
    }
    ordered
}

/// How many declared pod parents a link runs on (0 for a link without one).
fn depth(name: &str, declared: &HashMap<&str, &InterfaceSpec>) -> usize {
    let mut depth = 0;
    let mut at = name;
    while let Some(parent) = declared
        .get(at)
        .filter(|i| !i.parent_in_host)
        .and_then(|i| i.parent.as_deref())
    {
        depth += 1;
        if depth > declared.len() {
            break; // a parent loop; `api::validate` refuses those
        }
        at = parent;
    }
    depth
}

/// The pod link whose MTU bounds this one's (the kernel refuses a larger MTU).
fn mtu_bounded_by(iface: &InterfaceSpec) -> Option<&str> {
    match iface.kind {
        InterfaceType::Vlan => iface.parent.as_deref(),
        InterfaceType::Macvlan | InterfaceType::Ipvlan if !iface.parent_in_host => {
            iface.parent.as_deref()
        }
        _ => None,
    }
}

/// The host end of a kept veth must still be its peer (by index) and bear its name, else
/// the pair is recreated.
fn host_peer_ok(kind: &LinkKind, seen: &ObservedLink, observed: &Observed) -> bool {
    match kind {
        LinkKind::Veth { peer } => observed.host_peer_of(seen, peer).is_some(),
        _ => true,
    }
}

/// A veth may be created only if its peer name is free in the host, or held by the very
/// peer of the pod link it replaces (deleted with it). A host link of that name that is
/// not this pod's peer is never touched: not enslaved, not renamed, not marked.
fn peer_name_free(kind: &LinkKind, seen: Option<&ObservedLink>, observed: &Observed) -> bool {
    let LinkKind::Veth { peer } = kind else {
        return true;
    };
    match observed.host_link(peer) {
        None => true,
        Some(h) => seen.is_some_and(|l| {
            l.is_nes() && observed.host_peer_of(l, peer).map(|p| p.index) == Some(h.index)
        }),
    }
}

/// Creation parameters of a declared interface (`None` for `existing` or incomplete specs).
pub fn link_kind(iface: &InterfaceSpec) -> Option<LinkKind> {
    let parse = |s: &Option<String>| s.as_deref().and_then(|v| v.parse::<IpAddr>().ok());
    Some(match iface.kind {
        InterfaceType::Existing => return None,
        InterfaceType::Bridge => LinkKind::Bridge,
        InterfaceType::Veth => LinkKind::Veth {
            peer: iface.peer.clone()?,
        },
        InterfaceType::Vlan => LinkKind::Vlan {
            parent: iface.parent.clone()?,
            id: iface.vlan_id?,
            dot1ad: iface.vlan_protocol == Some(api::VlanProtocol::Dot1Ad),
        },
        InterfaceType::Macvlan => LinkKind::Macvlan {
            parent: iface.parent.clone()?,
            mode: iface.mode?,
            in_host: iface.parent_in_host,
        },
        InterfaceType::Ipvlan => LinkKind::Ipvlan {
            parent: iface.parent.clone()?,
            mode: iface.mode?,
            in_host: iface.parent_in_host,
        },
        InterfaceType::Vxlan => LinkKind::Vxlan {
            vni: iface.vni?,
            remote: parse(&iface.remote),
            local: parse(&iface.local),
            group: parse(&iface.group),
            port: iface.port,
            parent: iface.parent.clone(),
        },
    })
}

/// Whether the spec declares anything on the host side (so the host links must be observed).
pub fn needs_host(desired: &NetworkConfigurationSpec) -> bool {
    desired
        .interfaces
        .iter()
        .any(|i| i.kind == InterfaceType::Veth || i.parent_in_host)
}

#[cfg(test)]
mod tests;
