//! Desired state of each pod: the fragments of every manager, the generation and the
//! ownership record. A trait, so the standalone agent keeps it in files and the cluster
//! agent in the API server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use api::NetworkConfigurationSpec;
use serde::{Deserialize, Serialize};

use crate::atomic_file::{read_json, write_json, Durability};
use crate::error::{Error, Result};
use crate::owned::Owned;

/// Everything nes remembers about one pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    /// Grows by one on every accepted change of the desired spec.
    pub generation: i64,
    /// Each manager's fragment, as it last applied it.
    #[serde(default)]
    pub fragments: BTreeMap<String, NetworkConfigurationSpec>,
    /// What nes created in the pod's netns, and which netns that was: a new netns (pod
    /// restart) starts with nothing owned.
    #[serde(default)]
    pub owned: Owned,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<api::NetnsIdentity>,
}

/// Where desired state lives.
pub trait DesiredStore: Send + Sync + 'static {
    fn load(&self, pod: &str) -> Result<Option<PodRecord>>;
    /// Keeps the whole record; the desired state in it survives a power loss.
    fn save(&self, pod: &str, record: &PodRecord) -> Result<()>;
    /// Keeps only the ownership record. It describes kernel state, which a power loss takes
    /// with it, so it need only survive the agent's crash: no sync to disk on the pass that
    /// writes it.
    fn save_owned(&self, pod: &str, owned: &Owned) -> Result<()>;
    fn location(&self, pod: &str) -> String;
}

/// Records as files: `<dir>/<pod>.json`, and the newer ownership record of each pod in
/// `<dir>/owned/<pod>.json` (a directory of its own, so no pod's name can collide with it).
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let owned = dir.join(OWNED_DIR);
        std::fs::create_dir_all(&owned).map_err(|source| Error::File {
            path: owned.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    fn path(&self, pod: &str) -> PathBuf {
        self.dir.join(format!("{pod}.json"))
    }

    fn owned_path(&self, pod: &str) -> PathBuf {
        self.dir.join(OWNED_DIR).join(format!("{pod}.json"))
    }
}

const OWNED_DIR: &str = "owned";

impl DesiredStore for FileStore {
    /// The record, with the ownership record of `owned/` when there is one (it is never
    /// older than the record's own copy; records written before it existed have only that).
    fn load(&self, pod: &str) -> Result<Option<PodRecord>> {
        let Some(mut record) = read_json::<PodRecord>(&self.path(pod))? else {
            return Ok(None);
        };
        if let Some(owned) = read_json(&self.owned_path(pod))? {
            record.owned = owned;
        }
        Ok(Some(record))
    }

    fn save(&self, pod: &str, record: &PodRecord) -> Result<()> {
        self.save_owned(pod, &record.owned)?;
        write_json(&self.path(pod), record, Durability::PowerLoss)
    }

    fn save_owned(&self, pod: &str, owned: &Owned) -> Result<()> {
        write_json(&self.owned_path(pod), owned, Durability::ProcessCrash)
    }

    fn location(&self, pod: &str) -> String {
        self.path(pod).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trips_a_record_and_misses_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        assert_eq!(store.load("demo-0").expect("load"), None);
        let mut rec = PodRecord {
            generation: 3,
            ..Default::default()
        };
        rec.fragments
            .insert("app".into(), NetworkConfigurationSpec::default());
        rec.owned.add_address("eth0", "10.0.0.5/24".into());
        store.save("demo-0", &rec).expect("save");
        assert_eq!(store.load("demo-0").expect("load"), Some(rec));
        assert!(
            !dir.path().join("demo-0.tmp").exists(),
            "temp file left behind"
        );
    }

    #[test]
    fn an_ownership_record_saved_alone_is_loaded_over_the_records_own_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        let mut rec = PodRecord {
            generation: 1,
            ..Default::default()
        };
        rec.owned.add_address("eth0", "10.0.0.5/24".into());
        store.save("demo-0", &rec).expect("save");
        let mut owned = rec.owned.clone();
        owned.add_address("eth0", "10.0.0.6/24".into());
        store.save_owned("demo-0", &owned).expect("save owned");
        let loaded = store.load("demo-0").expect("load").expect("record");
        assert_eq!(loaded.owned, owned);
        assert_eq!(loaded.generation, 1);
        // A record written before the ownership file existed keeps its own copy.
        std::fs::remove_file(dir.path().join("owned/demo-0.json")).expect("remove");
        let legacy = store.load("demo-0").expect("load").expect("record");
        assert_eq!(legacy.owned, rec.owned);
    }

    #[test]
    fn file_store_reports_a_corrupt_record_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bad.json"), b"{nope").expect("write");
        let store = FileStore::open(dir.path()).expect("open");
        let err = store.load("bad").unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
    }
}
