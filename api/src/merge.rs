//! Merging the fragments of several managers into one pod spec, the way server-side apply
//! merges list-map entries: entries with the same key (interface name, route key) are merged
//! field by field; a field two managers set to different values is a conflict naming its owner.
//! Addresses are a set and simply union.

use std::collections::BTreeMap;
use std::fmt::Debug;

// Seeded like std's hasher, without SipHash's cost on small keys.
use foldhash::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::attach::AttachmentSpec;
use crate::netconf::{InterfaceSpec, InterfaceType, NetworkConfigurationSpec, RouteKey, RouteSpec};

/// A field claimed by two managers with different values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is owned by manager {owner:?} with a different value ({theirs}, not {ours})")]
pub struct Conflict {
    /// Field path, e.g. `spec.interfaces[name=eth0].mtu`.
    pub field: String,
    /// The manager that set it first.
    pub owner: String,
    pub theirs: String,
    pub ours: String,
}

/// Which managers declared each entry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Owners {
    /// Interface name -> managers.
    pub interfaces: BTreeMap<String, Vec<String>>,
    /// Routes with their managers.
    pub routes: Vec<RouteOwners>,
    /// Attachment (network reference) -> managers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attachments: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteOwners {
    #[serde(flatten)]
    pub key: RouteKey,
    pub managers: Vec<String>,
}

/// The merged spec and who owns what.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    pub spec: NetworkConfigurationSpec,
    pub owners: Owners,
}

/// Merges fragments in the given order; on a conflict the earlier manager is the owner, so
/// callers put the manager being applied last.
pub fn merge<'a>(
    fragments: impl IntoIterator<Item = (&'a str, &'a NetworkConfigurationSpec)>,
) -> Result<Merged, Conflict> {
    let mut m = Merger::default();
    for (manager, fragment) in fragments {
        for iface in &fragment.interfaces {
            m.interface(manager, iface)?;
        }
        for route in &fragment.routes {
            m.route(manager, route)?;
        }
        for attachment in &fragment.attachments {
            m.attachment(manager, attachment)?;
        }
    }
    Ok(m.finish())
}

/// The merge of `manager`'s fragment when it is the pod's only one and [`crate::validate`]
/// accepts it alone: the fragment itself, every entry its manager's. It is what [`merge`]
/// gives for it, without the work of folding repeats: a valid spec has none to fold.
pub fn alone(manager: &str, fragment: &NetworkConfigurationSpec) -> Merged {
    let managers = || vec![manager.to_string()];
    Merged {
        spec: fragment.clone(),
        owners: Owners {
            interfaces: (fragment.interfaces.iter())
                .map(|i| (i.name.clone(), managers()))
                .collect(),
            routes: (fragment.routes.iter())
                .map(|r| RouteOwners {
                    key: r.key(),
                    managers: managers(),
                })
                .collect(),
            attachments: (fragment.attachments.iter())
                .map(|a| (a.name.clone(), managers()))
                .collect(),
        },
    }
}

/// Merges every stored fragment with `manager`'s new one last (it replaces that manager's
/// previous fragment, as an apply does), so a conflict names the other manager.
pub fn merge_applying(
    stored: &BTreeMap<String, NetworkConfigurationSpec>,
    manager: &str,
    fragment: &NetworkConfigurationSpec,
) -> Result<Merged, Conflict> {
    merge(
        stored
            .iter()
            .filter(|(m, _)| m.as_str() != manager)
            .map(|(m, s)| (m.as_str(), s))
            .chain(std::iter::once((manager, fragment))),
    )
}

#[derive(Default)]
struct Merger {
    interfaces: Vec<InterfaceSpec>,
    routes: Vec<RouteSpec>,
    /// field path -> manager that set it first
    field_owner: BTreeMap<String, String>,
    owners: Owners,
    // Indexes, so a pod of many entries merges in linear time (a PUT of 1500 objects
    // spent 170 ms here in list scans): interface name -> position in `interfaces` (and
    // its addresses as parsed), route key -> position in `routes` and `owners.routes`.
    interface_at: HashMap<String, usize>,
    addresses_of: Vec<HashSet<AddressKey>>,
    route_at: HashMap<RouteKey, usize>,
    attachments: Vec<AttachmentSpec>,
}

/// An address as compared in a merge: parsed when it parses (two spellings of one
/// address are one entry), else as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum AddressKey {
    Net(ipnet::IpNet),
    Raw(String),
}

impl AddressKey {
    fn of(a: &str) -> Self {
        crate::validate::net(a).map_or_else(|| Self::Raw(a.to_string()), Self::Net)
    }
}

impl Merger {
    fn interface(&mut self, manager: &str, new: &InterfaceSpec) -> Result<(), Conflict> {
        let at = format!("spec.interfaces[name={}]", new.name);
        add_owner(
            self.owners.interfaces.entry(new.name.clone()).or_default(),
            manager,
        );
        let Some(&idx) = self.interface_at.get(&new.name) else {
            self.interface_at
                .insert(new.name.clone(), self.interfaces.len());
            self.interfaces.push(new.clone());
            self.addresses_of
                .push(new.addresses.iter().map(|a| AddressKey::of(a)).collect());
            self.claim_all(&at, manager, new);
            return Ok(());
        };
        let mut acc = self.interfaces[idx].clone();
        // `existing` means "I do not create it": it merges with the type another manager creates.
        match (acc.kind, new.kind) {
            (a, b) if a == b => {}
            (InterfaceType::Existing, b) => {
                acc.kind = b;
                self.field_owner
                    .insert(format!("{at}.type"), manager.to_string());
            }
            (_, InterfaceType::Existing) => {}
            (a, b) => return Err(self.conflict(&format!("{at}.type"), a.as_str(), b.as_str())),
        }
        let f = &mut FieldMerge {
            merger: self,
            at: &at,
            manager,
        };
        f.opt("parent", &mut acc.parent, &new.parent)?;
        f.flag("parentInHost", &mut acc.parent_in_host, new.parent_in_host)?;
        f.opt("vlanId", &mut acc.vlan_id, &new.vlan_id)?;
        f.opt("vlanProtocol", &mut acc.vlan_protocol, &new.vlan_protocol)?;
        f.opt("mode", &mut acc.mode, &new.mode)?;
        f.opt("vni", &mut acc.vni, &new.vni)?;
        f.opt("remote", &mut acc.remote, &new.remote)?;
        f.opt("local", &mut acc.local, &new.local)?;
        f.opt("group", &mut acc.group, &new.group)?;
        f.opt("port", &mut acc.port, &new.port)?;
        f.opt("peer", &mut acc.peer, &new.peer)?;
        f.opt("peerBridge", &mut acc.peer_bridge, &new.peer_bridge)?;
        f.opt("master", &mut acc.master, &new.master)?;
        f.opt("mtu", &mut acc.mtu, &new.mtu)?;
        f.opt("state", &mut acc.state, &new.state)?;
        for a in &new.addresses {
            if self.addresses_of[idx].insert(AddressKey::of(a)) {
                acc.addresses.push(a.clone());
            }
        }
        self.interfaces[idx] = acc;
        Ok(())
    }

    fn route(&mut self, manager: &str, new: &RouteSpec) -> Result<(), Conflict> {
        let key = new.key();
        // `routes` and `owners.routes` grow together: one position for both.
        let Some(&idx) = self.route_at.get(&key) else {
            self.route_at.insert(key.clone(), self.routes.len());
            self.owners.routes.push(RouteOwners {
                key,
                managers: vec![manager.to_string()],
            });
            self.routes.push(new.clone());
            return Ok(());
        };
        let at = format!(
            "spec.routes[dst={},table={},metric={}]",
            key.dst, key.table, key.metric
        );
        // The fields a route came with are its first manager's. They are written down only
        // now that a second manager declares it: most routes have one manager, and a big
        // spec has a thousand of them.
        let first = self.owners.routes[idx]
            .managers
            .first()
            .cloned()
            .unwrap_or_default();
        let had = &self.routes[idx];
        for (field, set) in [("via", had.via.is_some()), ("dev", had.dev.is_some())] {
            if set {
                self.field_owner
                    .entry(format!("{at}.{field}"))
                    .or_insert_with(|| first.clone());
            }
        }
        add_owner(&mut self.owners.routes[idx].managers, manager);
        let mut acc = self.routes[idx].clone();
        let f = &mut FieldMerge {
            merger: self,
            at: &at,
            manager,
        };
        f.opt("via", &mut acc.via, &new.via)?;
        f.opt("dev", &mut acc.dev, &new.dev)?;
        self.routes[idx] = acc;
        Ok(())
    }

    /// Attachments merge by network like interfaces by name: `ips` is a set, every other
    /// field has one owner. Declared order is the first manager's.
    fn attachment(&mut self, manager: &str, new: &AttachmentSpec) -> Result<(), Conflict> {
        let at = format!("spec.attachments[name={}]", new.name);
        add_owner(
            self.owners.attachments.entry(new.name.clone()).or_default(),
            manager,
        );
        let Some(idx) = self.attachments.iter().position(|a| a.name == new.name) else {
            self.attachments.push(new.clone());
            for (field, set) in [
                ("interface", new.interface.is_some()),
                ("mac", new.mac.is_some()),
                ("cniArgs", !new.cni_args.is_empty()),
            ] {
                if set {
                    self.field_owner
                        .insert(format!("{at}.{field}"), manager.to_string());
                }
            }
            return Ok(());
        };
        let mut acc = self.attachments[idx].clone();
        let f = &mut FieldMerge {
            merger: self,
            at: &at,
            manager,
        };
        f.opt("interface", &mut acc.interface, &new.interface)?;
        f.opt("mac", &mut acc.mac, &new.mac)?;
        let (mut args, new_args) = (
            Some(acc.cni_args.clone()).filter(|a| !a.is_empty()),
            Some(new.cni_args.clone()).filter(|a| !a.is_empty()),
        );
        f.opt("cniArgs", &mut args, &new_args)?;
        acc.cni_args = args.unwrap_or_default();
        for ip in &new.ips {
            let key = AddressKey::of(ip);
            if !acc.ips.iter().any(|have| AddressKey::of(have) == key) {
                acc.ips.push(ip.clone());
            }
        }
        self.attachments[idx] = acc;
        Ok(())
    }

    /// Records `manager` as the owner of every field set in a new entry.
    fn claim_all(&mut self, at: &str, manager: &str, iface: &InterfaceSpec) {
        let json = serde_json::to_value(iface).unwrap_or_default();
        for field in json.as_object().into_iter().flat_map(|o| o.keys()) {
            if field != "name" && field != "addresses" {
                self.field_owner
                    .insert(format!("{at}.{field}"), manager.to_string());
            }
        }
    }

    fn conflict(&self, field: &str, theirs: &str, ours: &str) -> Conflict {
        Conflict {
            field: field.to_string(),
            owner: self.field_owner.get(field).cloned().unwrap_or_default(),
            theirs: theirs.to_string(),
            ours: ours.to_string(),
        }
    }

    fn finish(self) -> Merged {
        Merged {
            spec: NetworkConfigurationSpec {
                interfaces: self.interfaces,
                routes: self.routes,
                attachments: self.attachments,
            },
            owners: self.owners,
        }
    }
}

struct FieldMerge<'m> {
    merger: &'m mut Merger,
    at: &'m str,
    manager: &'m str,
}

impl FieldMerge<'_> {
    fn opt<T: PartialEq + Clone + Debug>(
        &mut self,
        field: &str,
        acc: &mut Option<T>,
        new: &Option<T>,
    ) -> Result<(), Conflict> {
        let path = format!("{}.{field}", self.at);
        match (acc.as_ref(), new) {
            (_, None) => Ok(()),
            (None, Some(v)) => {
                *acc = Some(v.clone());
                self.merger
                    .field_owner
                    .insert(path, self.manager.to_string());
                Ok(())
            }
            (Some(a), Some(b)) if a == b => Ok(()),
            (Some(a), Some(b)) => Err(self.merger.conflict(&path, &show(a), &show(b))),
        }
    }

    fn flag(&mut self, field: &str, acc: &mut bool, new: bool) -> Result<(), Conflict> {
        let (mut a, b) = (acc.then_some(true), new.then_some(true));
        self.opt(field, &mut a, &b)?;
        *acc = a.unwrap_or(false);
        Ok(())
    }
}

fn show<T: Debug>(v: &T) -> String {
    format!("{v:?}")
}

fn add_owner(list: &mut Vec<String>, manager: &str) {
    if !list.iter().any(|m| m == manager) {
        list.push(manager.to_string());
    }
}

#[cfg(test)]
mod tests;
