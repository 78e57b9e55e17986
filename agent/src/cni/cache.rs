//! Results kept the way libcni keeps them (`CACHE/results/NETWORK-CONTAINERID-IFNAME`, a
//! `cniCacheV1` JSON document whose `config` is the list's bytes in base64, Go's encoding of
//! `[]byte`), so the runtime's and Multus' libcni read nes's attachments as their own kind.
//! nes adds `managedBy` (libcni ignores unknown fields): the runtime's entries for the same
//! sandbox (its `eth0`) are never nes's to check or delete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniError;
use crate::atomic_file::{write_json, Durability};

pub const CACHE_KIND: &str = "cniCacheV1";
pub const MANAGED_BY: &str = "nes.network-config.io";
/// A cache file larger than this is not nes's (results are a few KiB).
const MAX_ENTRY_BYTES: u64 = 4 * 1024 * 1024;

/// One cached attachment (libcni's `cachedInfo`, plus nes's marks).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedInfo {
    pub kind: String,
    pub container_id: String,
    #[serde(with = "go_bytes")]
    pub config: Vec<u8>,
    pub if_name: String,
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capability_args: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// nes's mark: present only on what nes attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// The reference the attachment was declared with (`ns/name` or `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nes_reference: Option<String>,
    /// Attach order (nanoseconds since the epoch): removals run newest first.
    #[serde(default)]
    pub nes_seq: u128,
}

impl CachedInfo {
    pub fn is_nes(&self) -> bool {
        self.managed_by.as_deref() == Some(MANAGED_BY)
    }
}

mod go_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// The results directory of a libcni cache dir.
#[derive(Clone, Debug)]
pub struct Cache {
    results: PathBuf,
}

impl Cache {
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            results: cache_dir.join("results"),
        }
    }

    /// libcni's file name for one attachment.
    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.results
            .join(format!("{network}-{container_id}-{ifname}"))
    }

    pub fn save(&self, info: &CachedInfo) -> Result<(), CniError> {
        let path = self.path(&info.network_name, &info.container_id, &info.if_name);
        let fail = |message: String| CniError::Cache {
            path: path.display().to_string(),
            message,
        };
        std::fs::create_dir_all(&self.results).map_err(|e| fail(e.to_string()))?;
        write_json(&path, info, Durability::ProcessCrash).map_err(|e| fail(e.to_string()))
    }

    pub fn remove(&self, info: &CachedInfo) -> Result<(), CniError> {
        let path = self.path(&info.network_name, &info.container_id, &info.if_name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::Cache {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// nes's attachments of one sandbox, oldest first. Unreadable files are skipped: they
    /// are either not nes's or will be re-created by the next ADD.
    pub fn attached(&self, container_id: &str) -> Vec<CachedInfo> {
        let Ok(entries) = std::fs::read_dir(&self.results) else {
            return Vec::new();
        };
        let infix = format!("-{container_id}-");
        let mut out: Vec<CachedInfo> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(&infix))
            .filter_map(|e| read_entry(&e.path()))
            .filter(|i| i.is_nes() && i.container_id == container_id && i.kind == CACHE_KIND)
            .collect();
        out.sort_by_key(|i| i.nes_seq);
        out
    }
}

fn read_entry(path: &Path) -> Option<CachedInfo> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_ENTRY_BYTES).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests;
