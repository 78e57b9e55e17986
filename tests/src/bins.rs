//! The workspace's binaries the tests drive. `CARGO_BIN_EXE_*` exists only in the package that
//! owns a binary, so this crate finds them next to its own test executable
//! (`target/<profile>/deps/<test>` → `target/<profile>/<bin>`), after asking cargo to bring
//! them up to date when the test runs under cargo or nextest (both set `CARGO`); the VM lane
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

/// Under cargo or nextest, `cargo build --workspace --bins` once per test process, so a test
/// never runs a stale binary: `cargo nextest run --workspace` builds only the binaries of
/// packages that have integration tests of their own, and `-p nes-tests` none.
fn build_once(dir: &Path) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return;
        };
        // target/<profile>: the profile is the directory's name, the target dir its parent.
        let (Some(profile), Some(target)) =
            (dir.file_name().and_then(|p| p.to_str()), dir.parent())
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
    });
}
