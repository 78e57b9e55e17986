//! Replacing a file so that a crash leaves the old or the new content, never a mix.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to a temp file beside `path`, syncs it and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(file_err)?;
    f.write_all(bytes).map_err(file_err)?;
    f.sync_all().map_err(file_err)?;
    std::fs::rename(&tmp, path).map_err(file_err)
}
