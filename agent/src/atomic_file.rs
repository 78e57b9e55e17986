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
    if durability == Durability::PowerLoss {
        tmp.as_file().sync_data().map_err(file_err)?;
    }
    tmp.persist(path).map_err(|e| file_err(e.error))?;
    if durability == Durability::PowerLoss {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(file_err)?;
    }
    Ok(())
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
}
