//! Desired state of each pod: the fragments of every manager, the generation and the
//! ownership record. A trait, so the standalone agent keeps it in files and the cluster
//! agent in the API server.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use api::NetworkConfigurationSpec;
use common::sync::lock;
use serde::{Deserialize, Serialize};

use crate::atomic_file::{read_json, to_json, write_bytes, Durability};
use crate::error::{Error, Result};
use crate::owned::Owned;
use tracing::{info, warn};

use super::journal::{Journal, Synced};

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
    /// Keeps the whole record, its ownership record first; the desired state in it
    /// survives a power loss.
    fn save(&self, pod: &str, record: &PodRecord) -> Result<()> {
        self.save_owned(pod, &record.owned)?;
        self.save_record(pod, record, &|| ())
    }
    /// Keeps the record but for its ownership record; calls `written` once the record an
    /// agent restarted after a crash would read is in place, before its sync to disk.
    fn save_record(&self, pod: &str, record: &PodRecord, written: &dyn Fn()) -> Result<()>;
    /// Keeps only the ownership record. It describes kernel state, which a power loss takes
    /// with it, so it need only survive the agent's crash: no sync to disk on the pass that
    /// writes it.
    fn save_owned(&self, pod: &str, owned: &Owned) -> Result<()>;
    fn location(&self, pod: &str) -> String;
    /// Does ahead of a pod's first save what can be done before its record is known.
    fn prepare(&self, _pod: &str) -> Result<()> {
        Ok(())
    }
}

/// Records as files: `<dir>/<pod>.json`, the newer ownership record of each pod in
/// `<dir>/owned/<pod>.json`, and each record's power-loss copy in `<dir>/journal/<pod>`
/// (directories of their own, so no pod's name can collide with them).
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    journal: Arc<Journal>,
    /// Each pod's ownership file as this store last wrote it. Every save of a pod's record
    /// saves its ownership record too, most often unchanged: the same bytes are not written
    /// again. Exact while only this store writes those files, a pod's writes one at a time
    /// (under the pod's lock); a failed write forgets.
    owned_written: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl FileStore {
    /// The store in `dir`, for the machine's current boot.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let path = Path::new(BOOT_ID);
        let boot = std::fs::read_to_string(path).map_err(|source| Error::File {
            path: path.into(),
            source,
        })?;
        Self::open_in_boot(dir, boot.trim())
    }

    /// The store in `dir` as a boot with this id sees it (a power loss is a new boot).
    pub fn open_in_boot(dir: impl Into<PathBuf>, boot: &str) -> Result<Self> {
        let dir = dir.into();
        let owned = dir.join(OWNED_DIR);
        std::fs::create_dir_all(&owned).map_err(|source| Error::File {
            path: owned.clone(),
            source,
        })?;
        let journal = Arc::new(Journal::open(dir.join(JOURNAL_DIR), boot.to_string())?);
        Ok(Self {
            dir,
            journal,
            owned_written: Arc::default(),
        })
    }

    /// After a reboot, the record as its power-loss copy has it: `<pod>.json` may have lost
    /// its last writes. It is written back, so readers of `<pod>.json` see it too.
    fn restore(&self, pod: &str, copy: Synced) -> Result<PodRecord> {
        let record: PodRecord =
            serde_json::from_slice(&copy.payload).map_err(|e| Error::Parse {
                path: self.journal.path(pod),
                message: e.to_string(),
            })?;
        let path = self.path(pod);
        if std::fs::read(&path).ok().as_deref() != Some(&copy.payload[..]) {
            info!(
                pod,
                generation = record.generation,
                "record restored from its power-loss copy"
            );
            // The copy is the record either way; the file is for its readers.
            if let Err(error) = write_bytes(&path, &copy.payload, Durability::ProcessCrash) {
                warn!(pod, %error, "cannot write the restored record back");
            }
        }
        Ok(record)
    }

    fn path(&self, pod: &str) -> PathBuf {
        self.dir.join(format!("{pod}.json"))
    }

    fn owned_path(&self, pod: &str) -> PathBuf {
        self.dir.join(OWNED_DIR).join(format!("{pod}.json"))
    }
}

const OWNED_DIR: &str = "owned";
const JOURNAL_DIR: &str = "journal";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

impl DesiredStore for FileStore {
    /// The record, with the ownership record of `owned/` when there is one (it is never
    /// older than the record's own copy; records written before it existed have only that).
    fn load(&self, pod: &str) -> Result<Option<PodRecord>> {
        // Within a boot `<pod>.json` is the newest (it is written first); after a reboot the
        // copy that was synced is.
        let record = match self.journal.read(pod)? {
            Some(copy) if copy.boot != self.journal.boot() => Some(self.restore(pod, copy)?),
            _ => read_json::<PodRecord>(&self.path(pod))?,
        };
        let Some(mut record) = record else {
            return Ok(None);
        };
        if let Some(owned) = read_json(&self.owned_path(pod))? {
            record.owned = owned;
        }
        Ok(Some(record))
    }

    /// `<pod>.json` first, then its power-loss copy. A copy that cannot be written puts the
    /// file back as it was: a failed save changes nothing either way.
    fn save_record(&self, pod: &str, record: &PodRecord, written: &dyn Fn()) -> Result<()> {
        let path = self.path(pod);
        let json = to_json(&path, record)?;
        let before = std::fs::read(&path).ok();
        write_bytes(&path, &json, Durability::ProcessCrash)?;
        written();
        let synced = self.journal.write(pod, &json);
        if synced.is_err() {
            let undone = match before {
                Some(bytes) => write_bytes(&path, &bytes, Durability::ProcessCrash),
                None => std::fs::remove_file(&path).map_err(|source| Error::File {
                    path: path.clone(),
                    source,
                }),
            };
            if let Err(error) = undone {
                warn!(pod, %error, "a record whose save failed is left in place");
            }
        }
        synced
    }

    fn save_owned(&self, pod: &str, owned: &Owned) -> Result<()> {
        let path = self.owned_path(pod);
        let json = to_json(&path, owned)?;
        let written = || lock(&self.owned_written);
        if written().get(pod) == Some(&json) {
            return Ok(());
        }
        let result = write_bytes(&path, &json, Durability::ProcessCrash);
        match result {
            Ok(()) => written().insert(pod.to_string(), json),
            Err(_) => written().remove(pod),
        };
        result
    }

    fn location(&self, pod: &str) -> String {
        self.path(pod).display().to_string()
    }

    /// The power-loss copy's file, synced with its directory: the first save is then one
    /// filesystem commit, not two.
    fn prepare(&self, pod: &str) -> Result<()> {
        self.journal.prepare(pod)
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

    fn store_in_boot(boot: &str) -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open_in_boot(dir.path(), boot).expect("open");
        (dir, store)
    }

    fn record(generation: i64) -> PodRecord {
        PodRecord {
            generation,
            ..Default::default()
        }
    }

    /// A power loss keeps what was synced; `<pod>.json` is not, so it may come back old,
    /// empty or missing. After the reboot the synced copy is the record; within a boot (an
    /// agent restart) `<pod>.json` is, as it is the newer one.
    #[test]
    fn after_a_reboot_the_record_is_its_synced_copy() {
        let (dir, store) = store_in_boot("boot-a");
        store.save("p", &record(1)).expect("save");
        let stale = std::fs::read(dir.path().join("p.json")).expect("read");
        store.save("p", &record(2)).expect("save");
        for lost in [Some(stale), Some(Vec::new()), None] {
            match &lost {
                Some(bytes) => std::fs::write(dir.path().join("p.json"), bytes).expect("write"),
                None => std::fs::remove_file(dir.path().join("p.json")).expect("remove"),
            }
            let rebooted = FileStore::open_in_boot(dir.path(), "boot-b").expect("open");
            assert_eq!(
                rebooted.load("p").expect("load"),
                Some(record(2)),
                "{lost:?}"
            );
            // Written back for whoever reads the file.
            let file = read_json::<PodRecord>(&dir.path().join("p.json")).expect("read");
            assert_eq!(file, Some(record(2)));
        }
        // Same boot: the file is the newest, even when the synced copy says otherwise.
        std::fs::write(dir.path().join("p.json"), b"{\"generation\":3}").expect("write");
        assert_eq!(store.load("p").expect("load"), Some(record(3)));
    }

    #[test]
    fn a_save_whose_synced_copy_fails_leaves_the_record_as_it_was() {
        let (dir, store) = store_in_boot("boot-a");
        store.save("p", &record(1)).expect("save");
        let copy = dir.path().join("journal/p");
        std::fs::remove_file(&copy).expect("remove");
        std::fs::create_dir(&copy).expect("a directory in its place");
        store
            .save("p", &record(2))
            .expect_err("the copy cannot be written");
        let file = read_json::<PodRecord>(&dir.path().join("p.json")).expect("read");
        assert_eq!(file, Some(record(1)));
        // A pod's first save, undone: no record at all.
        std::fs::create_dir(dir.path().join("journal/q")).expect("a directory");
        store
            .save("q", &record(1))
            .expect_err("the copy cannot be written");
        assert!(!dir.path().join("q.json").exists());
    }

    /// Every change of a pod's desired state saves its record with its ownership record,
    /// most often unchanged: that file is written only when its content changes (a new netns
    /// resets it, and a reset must reach the disk, or nes would claim what it does not own).
    #[test]
    fn an_unchanged_ownership_record_is_not_written_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open_in_boot(dir.path(), "boot-a").expect("open");
        let owned_file = dir.path().join("owned/p.json");
        let mut rec = PodRecord::default();
        rec.owned.add_address("eth0", "10.0.0.5/24".into());
        store.save("p", &rec).expect("save");
        // A mark only a write would wipe.
        std::fs::write(&owned_file, b"mark").expect("mark");
        rec.generation += 1;
        store.save("p", &rec).expect("save");
        assert_eq!(std::fs::read(&owned_file).expect("read"), b"mark");
        rec.owned = Owned::default();
        store.save("p", &rec).expect("save");
        let kept = read_json::<Owned>(&owned_file).expect("read");
        assert_eq!(kept, Some(Owned::default()));
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
