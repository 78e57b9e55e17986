//! The workspace's binaries the tests drive. `CARGO_BIN_EXE_*` exists only in the package that
//! owns a binary, so this crate finds them next to its own test executable
//! (`target/<profile>/deps/<test>` → `target/<profile>/<bin>`), after asking cargo to bring
//! them up to date once per run when the test runs under cargo or nextest (both set `CARGO`);
//! the VM lane
//! runs test executables without cargo and builds the binaries beforehand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `nes-agent` (package nes-agent).
pub fn nes_agent() -> PathBuf {
    find("nes-agent", "nes-agent")
}

/// `nes-shim` (package nes-agent).
pub fn nes_shim() -> PathBuf {
    find("nes-agent", "nes-shim")
}

/// `nescli` (package nes-cli).
pub fn nescli() -> PathBuf {
    find("nes-cli", "nescli")
}

/// The directory cargo puts binaries in: `NES_TEST_BIN_DIR` if set, else the parent of the
/// `deps/` directory this test executable runs from.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NES_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("target/<profile>")
    } else {
        deps
    };
    dir.to_path_buf()
}

fn find(package: &str, bin: &str) -> PathBuf {
    let dir = bin_dir();
    build_once(&dir);
    let path = dir.join(bin);
    assert!(
        path.is_file(),
        "the `{bin}` binary (package {package}) is not at {}: build it first with \
         `cargo build --workspace --bins` (or set NES_TEST_BIN_DIR to where it is)",
        path.display()
    );
    path
}

/// Under cargo or nextest, `cargo build --workspace --bins` once per test run, so a test
/// never runs a stale binary: `cargo nextest run --workspace` builds only the binaries of
/// packages that have integration tests of their own, and `-p nes-tests` none. nextest runs
/// every test in a process of its own, so the build is once per run (`NEXTEST_RUN_ID`, a
/// stamp under a file lock the other processes wait on), not once per test. Scripts that
/// build the binaries first say so with `NES_TEST_BINS_BUILT=1`.
fn build_once(dir: &Path) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("NES_TEST_BINS_BUILT").is_some() {
            return;
        }
        let Some(cargo) = std::env::var_os("CARGO") else {
            return;
        };
        let run = std::env::var("NEXTEST_RUN_ID").ok();
        let _lock = lock(dir);
        let stamp = run.map(|id| dir.join(format!(".nes-bins-built-{id}")));
        if stamp.as_ref().is_some_and(|s| s.exists()) {
            return;
        }
        cargo_build(&cargo, dir);
        if let Some(stamp) = stamp {
            forget_stamps(dir);
            let _ = std::fs::write(stamp, b"");
        }
    });
}

/// An exclusive lock on `dir/.nes-bins.lock` (released when dropped), so one process builds
/// while the others of the run wait for it; none when the file cannot be made.
fn lock(dir: &Path) -> Option<std::fs::File> {
    let file = std::fs::File::create(dir.join(".nes-bins.lock")).ok()?;
    file.lock().ok()?;
    Some(file)
}

/// Removes the stamps of earlier runs.
fn forget_stamps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(".nes-bins-built-")
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn cargo_build(cargo: &std::ffi::OsStr, dir: &Path) {
    // target/<profile>: the profile is the directory's name, the target dir its parent.
    let (Some(profile), Some(target)) = (dir.file_name().and_then(|p| p.to_str()), dir.parent())
    else {
        return;
    };
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--workspace", "--bins", "--target-dir"])
        .arg(target)
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"));
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build the workspace's binaries: {e}"));
    assert!(status.success(), "cargo build --workspace --bins: {status}");
}
