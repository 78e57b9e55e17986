//! What the cluster agent remembers about each pod across its own restarts: the sandbox it
//! configured and what nes created there. Desired state lives in the API server; this is
//! only the ownership record, which the kernel cannot tell (addresses carry no mark).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::decide::Sandbox;
use crate::atomic_file::{read_json, write_json, Durability};
use crate::error::{Error, Result};
use crate::owned::Owned;

/// One pod's record, in `STATE_DIR/pods/UID.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub sandbox: Sandbox,
    #[serde(default)]
    pub owned: Owned,
}

/// Records by pod UID in a directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn open(state_dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = state_dir.into().join("pods");
        std::fs::create_dir_all(&dir).map_err(|source| Error::File {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    fn path(&self, uid: &str) -> PathBuf {
        // A UID is a UUID; anything else is kept out of the path.
        let safe: String = uid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        self.dir.join(format!("{safe}.json"))
    }

    /// What nes owns in `sandbox`: the record's when it is about that very sandbox, else
    /// nothing (a new sandbox starts with nothing owned).
    pub fn owned_in(&self, uid: &str, sandbox: &Sandbox) -> Owned {
        match self.load(uid) {
            Ok(Some(state)) if &state.sandbox == sandbox => state.owned,
            Ok(_) => Owned::default(),
            Err(error) => {
                tracing::warn!(%error, "unreadable pod record; adopting by diffing alone");
                Owned::default()
            }
        }
    }

    pub fn load(&self, uid: &str) -> Result<Option<PodState>> {
        read_json(&self.path(uid))
    }

    pub fn save(&self, uid: &str, state: &PodState) -> Result<()> {
        write_json(&self.path(uid), state, Durability::ProcessCrash)
    }

    /// Forgets a pod that is gone for good.
    pub fn remove(&self, uid: &str) {
        let _ = std::fs::remove_file(self.path(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_is_kept_only_for_the_same_sandbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let states = StateDir::open(dir.path()).expect("open");
        let ns = api::NetnsIdentity {
            path: None,
            dev: 4,
            inode: 99,
        };
        let mut owned = Owned::default();
        owned.add_address("eth0", "10.0.0.5/24".into());
        let sandbox = Sandbox::new("s1", &ns);
        states
            .save(
                "uid-1",
                &PodState {
                    sandbox: sandbox.clone(),
                    owned: owned.clone(),
                },
            )
            .expect("save");
        assert_eq!(states.owned_in("uid-1", &sandbox), owned);
        assert_eq!(
            states.owned_in("uid-1", &Sandbox::new("s2", &ns)),
            Owned::default()
        );
        states.remove("uid-1");
        assert_eq!(states.load("uid-1").expect("load"), None);
    }
}
