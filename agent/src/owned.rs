//! The record of what nes created in one pod's network namespace.
//!
//! Links nes creates carry an alias marker and routes carry nes's route protocol, so both
//! can be recognised in the kernel; addresses have no such mark, so the set nes added is
//! kept here. The standalone agent persists this record to disk, the cluster agent keeps it
//! in the `NetworkConfiguration` status. `converge` takes the previous record and returns
//! the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic_file::{read_json, write_json, Durability};
use crate::error::Result;

/// What nes owns in one network namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Owned {
    /// Addresses nes added, per interface name, in CIDR form (`10.0.0.5/24`). Only these
    /// addresses are ever removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, BTreeSet<String>>,
    /// Links nes created (informational: the alias marker in the kernel is authoritative).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub links: BTreeSet<String>,
    /// Routes nes installed, as `dst table metric` keys (informational: the route protocol
    /// is authoritative).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub routes: BTreeSet<api::RouteKey>,
    /// Settings of links nes did not create, as they were before nes changed them, so they
    /// are put back when nes stops managing them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub originals: BTreeMap<String, Original>,
}

/// A link's own settings before nes changed them; `None` where nes changed nothing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Original {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<bool>,
}

impl Owned {
    pub fn owns_address(&self, ifname: &str, cidr: &str) -> bool {
        self.addresses.get(ifname).is_some_and(|s| s.contains(cidr))
    }

    pub fn add_address(&mut self, ifname: &str, cidr: String) {
        // The interface's set looked up before an entry is made: a plan adds hundreds of
        // addresses to one interface, and an entry would allocate its name each time.
        match self.addresses.get_mut(ifname) {
            Some(set) => {
                set.insert(cidr);
            }
            None => {
                self.addresses
                    .insert(ifname.to_string(), BTreeSet::from([cidr]));
            }
        }
    }

    pub fn remove_address(&mut self, ifname: &str, cidr: &str) {
        if let Some(set) = self.addresses.get_mut(ifname) {
            set.remove(cidr);
            if set.is_empty() {
                self.addresses.remove(ifname);
            }
        }
    }

    /// Loads a record written by [`Owned::save`]; a missing file is an empty record.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(read_json(path)?.unwrap_or_default())
    }

    /// Writes the record atomically, not synced: it describes kernel objects that a power
    /// loss removes too.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self, Durability::ProcessCrash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_record_round_trips_through_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("owned.json");
        assert_eq!(
            Owned::load(&path).expect("missing is empty"),
            Owned::default()
        );
        let mut owned = Owned::default();
        owned.add_address("eth0", "10.0.0.5/24".into());
        owned.links.insert("vx0".into());
        owned.save(&path).expect("save");
        assert_eq!(Owned::load(&path).expect("load"), owned);
        owned.remove_address("eth0", "10.0.0.5/24");
        assert!(owned.addresses.is_empty());
    }
}
