//! One agent per state directory: an exclusive `flock` on `STATE_DIR/.lock`, held for the
//! agent's lifetime and released by the kernel when the process ends (even by `kill -9`).
//! The file holds the holder's pid, so a second agent can say who holds it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
}

/// Locks `dir` (created if missing) for this process, or says which pid holds it.
pub fn lock(dir: &Path) -> Result<StateLock> {
    let file_err = |path: PathBuf| move |source| Error::File { path, source };
    std::fs::create_dir_all(dir).map_err(file_err(dir.to_path_buf()))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(file_err(path.clone()))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::StateLocked {
                dir: dir.to_path_buf(),
                holder: holder.trim().to_string(),
            });
        }
    };
    let pid = std::process::id();
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(*file, "{pid}"))
        .map_err(file_err(path))?;
    Ok(StateLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock(dir.path()).expect("first lock");
        let err = lock(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        lock(dir.path()).expect("free again once released");
    }
}
