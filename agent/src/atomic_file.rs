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
    /// (desired state).
    PowerLoss,
    /// A crash of the process only. For records of kernel state, which a power loss wipes
    /// anyway (network namespaces do not survive a reboot); a sync would cost more than the
    /// netlink work the record describes.
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

/// Writes `value` as JSON to a temp file beside `path` and renames it over `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T, durability: Durability) -> Result<()> {
    let file_err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(file_err)?;
    f.write_all(&json).map_err(file_err)?;
    if durability == Durability::PowerLoss {
        f.sync_all().map_err(file_err)?;
    }
    std::fs::rename(&tmp, path).map_err(file_err)
}
