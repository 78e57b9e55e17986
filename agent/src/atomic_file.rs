//! JSON records on disk, replaced so that a crash leaves the old or the new content, never
//! a mix.

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// What a write must survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A power loss too: synced before the rename. For what must outlive the machine's uptime
    /// (subscriptions; a pod's record has a synced copy of its own, `standalone::journal`).
    PowerLoss,
    /// A crash of the process only. For records of kernel state, which a power loss wipes
    /// anyway (network namespaces do not survive a reboot), a sync would cost more than the
    /// netlink work the record describes; and for files that a synced copy stands behind.
    ProcessCrash,
}

/// Reads a record written by [`write_json`]; `None` when there is none.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::File {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `value` as JSON to a new temp file beside `path` (a unique name, so two writers
/// never share one) and renames it over `path`. Compact, not pretty: a pod record can hold
/// thousands of entries and is written on the request path. For [`Durability::PowerLoss`] the file's
/// data (and its size) is synced before the rename and the directory after it, so the rename
/// itself is on disk. `fdatasync`, not `fsync`: the data and the size needed to read it back, without
/// the timestamps, which are not worth a journal write on the request path.
pub fn write_json<T: Serialize>(path: &Path, value: &T, durability: Durability) -> Result<()> {
    write_bytes(path, &to_json(path, value)?, durability)
}

/// `value` as compact JSON; an error names `path`, where it was to be written.
pub fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// [`write_json`] of bytes encoded already.
pub fn write_bytes(path: &Path, json: &[u8], durability: Durability) -> Result<()> {
    let file_err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(file_err)?;
    tmp.write_all(json).map_err(file_err)?;
    match durability {
        Durability::PowerLoss => {
            tmp.as_file().sync_data().map_err(file_err)?;
            tmp.persist(path).map_err(|e| file_err(e.error))?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(file_err)
        }
        Durability::ProcessCrash => replace_unsynced(tmp, path).map_err(file_err),
    }
}

/// Puts `tmp` at `path` as atomically as a rename, without sending its data to disk. ext4
/// (with its default `auto_da_alloc`) starts writing a file's data out when the file is
/// renamed over another, to save careless programs from a power loss: a disk write and about
/// 0.1 ms per replace on the request path, for records meant to die with the boot. Swapping
/// the two names (`RENAME_EXCHANGE`) is not a replace to ext4; the old content, under the
/// temp name then, is removed. Only a regular file is swapped: a swap would move a directory
/// or a link aside where a rename fails or replaces the link. Where there is nothing to swap
/// with, or the filesystem cannot swap, a rename.
fn replace_unsynced(tmp: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    // The check and the swap are two steps: only the agent writes its state directory.
    let is_file = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
    if !is_file {
        return tmp.persist(path).map(drop).map_err(|e| e.error);
    }
    match renameat_with(CWD, tmp.path(), CWD, path, RenameFlags::EXCHANGE) {
        Ok(()) => {
            // `path` holds the new content: a temp file that cannot be removed is left over,
            // as a crash right here would leave it, and the write has still happened.
            let old = tmp.path().to_path_buf();
            if let Err(error) = tmp.close() {
                tracing::warn!(path = %old.display(), %error, "cannot remove a replaced record");
            }
            Ok(())
        }
        Err(Errno::NOENT | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            tmp.persist(path).map(drop).map_err(|e| e.error)
        }
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_into_a_missing_directory_fails_and_names_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("state.json");
        let error = write_json(&path, &1, Durability::PowerLoss).expect_err("no directory");
        assert!(error.to_string().contains("state.json"), "{error}");
    }

    #[test]
    fn a_record_is_replaced_whole_and_no_temp_file_is_left_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        assert_eq!(read_json::<Vec<u32>>(&path).expect("read"), None);
        for (value, durability) in [
            (vec![1, 2, 3], Durability::PowerLoss),
            (vec![4], Durability::ProcessCrash),
            (vec![5, 6], Durability::ProcessCrash),
            (vec![7], Durability::PowerLoss),
        ] {
            write_json(&path, &value, durability).expect("write");
            assert_eq!(read_json::<Vec<u32>>(&path).expect("read"), Some(value));
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    /// What a rename would refuse or replace is not swapped aside: a directory stays, and a
    /// link is replaced, not its target.
    #[test]
    fn only_a_file_is_swapped_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocked = dir.path().join("blocked.json");
        std::fs::create_dir(&blocked).expect("mkdir");
        write_json(&blocked, &1, Durability::ProcessCrash).expect_err("a directory is there");
        assert!(blocked.is_dir(), "the directory was moved aside");
        let target = dir.path().join("target");
        std::fs::write(&target, "kept").expect("write");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        write_json(&link, &2, Durability::ProcessCrash).expect("replace the link");
        assert!(!link.is_symlink());
        assert_eq!(read_json::<u32>(&link).expect("read"), Some(2));
        assert_eq!(std::fs::read_to_string(&target).expect("target"), "kept");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["blocked.json", "link.json", "target"]);
    }

    /// ext4 allocates a file's blocks when it starts writing the file out; until then
    /// `filefrag` shows its extent as `delalloc`. A record renamed over the old one would have
    /// been sent to disk by the rename (`auto_da_alloc`).
    #[test]
    fn a_record_replaced_for_a_process_crash_is_not_sent_to_disk() {
        let test = "a_record_replaced_for_a_process_crash_is_not_sent_to_disk";
        let dir = tempfile::tempdir().expect("tempdir");
        // A file just written, for comparison: its allocation must be delayed here too.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, [0; 100]).expect("write");
        match extents(&plain) {
            Ok(out) if out.contains("delalloc") => {}
            Ok(out) => {
                return eprintln!("SKIP {test}: this filesystem does not delay allocation:\n{out}")
            }
            Err(why) => return eprintln!("SKIP {test}: {why}"),
        }
        let path = dir.path().join("owned.json");
        write_json(&path, &vec![1; 100], Durability::ProcessCrash).expect("first write");
        write_json(&path, &vec![2; 100], Durability::ProcessCrash).expect("replace");
        assert_eq!(
            read_json::<Vec<u32>>(&path).expect("read"),
            Some(vec![2; 100])
        );
        let out = extents(&path).expect("filefrag");
        assert!(
            out.contains("delalloc"),
            "the replaced record was written out:\n{out}"
        );
    }

    /// `filefrag -v`: a file's extents and their flags.
    fn extents(path: &Path) -> std::result::Result<String, String> {
        let out = std::process::Command::new("filefrag")
            .arg("-v")
            .arg(path)
            .output()
            .map_err(|e| format!("no filefrag (e2fsprogs): {e}"))?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(format!(
                "filefrag cannot map a file here: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }
}
