//! Replacing a file so that a crash leaves the old or the new content, never a mix.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to a temp file beside `path`, syncs it and renames it over `path`: the new
/// content survives a power loss. For what must outlive the machine's uptime (desired state).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// Like [`write_atomic`] without the sync: a crash of the process leaves the old or the new
/// content, a power loss may leave the old. For records of kernel state, which a power loss
/// wipes anyway (network namespaces do not survive a reboot); the sync would cost more than
/// the netlink work the record describes.
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let file_err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(file_err)?;
    f.write_all(bytes).map_err(file_err)?;
    if sync {
        f.sync_all().map_err(file_err)?;
    }
    std::fs::rename(&tmp, path).map_err(file_err)
}
