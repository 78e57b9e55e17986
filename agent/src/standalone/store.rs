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
    /// Replaces the pod's record; atomic: a crash leaves the old or the new record.
    fn save(&self, pod: &str, record: &PodRecord) -> Result<()>;
    /// Where the pod's record is kept, for messages.
    fn location(&self, pod: &str) -> String;
}

/// One JSON file per pod in a directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| Error::File {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    fn path(&self, pod: &str) -> PathBuf {
        self.dir.join(format!("{pod}.json"))
    }
}

impl DesiredStore for FileStore {
    fn load(&self, pod: &str) -> Result<Option<PodRecord>> {
        read_json(&self.path(pod))
    }

    fn save(&self, pod: &str, record: &PodRecord) -> Result<()> {
        write_json(&self.path(pod), record, Durability::PowerLoss)
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
    fn file_store_reports_a_corrupt_record_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bad.json"), b"{nope").expect("write");
        let store = FileStore::open(dir.path()).expect("open");
        let err = store.load("bad").unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
    }
}
