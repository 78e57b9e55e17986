#!/usr/bin/env bash
# Runs every nes test on a fresh Debian/Ubuntu machine, as root. Installs what the tests
# need first (scripts/deps.sh, idempotently), then: lint, the whole Rust suite, shell
# checks, and the real-kernel VM lane.
#
# The steps run with an environment this script sets (the system PATH plus cargo's bin
# dir, and only the variables listed below), so nothing installed by hand elsewhere can
# make them pass. As root (or with CI=true) NES_REQUIRE_ROOT=1 is set: a test that needs
# root or a tool fails instead of skipping, and any SKIP line other than a kernel link kind
# the host lacks (those run in the VM lane) fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${NES_TEST_CLEAN_ENV:-}" ]; then
    # shellcheck source=/dev/null
    source scripts/deps.sh
    keep=()
    for v in HOME TERM CI CARGO_HOME RUSTUP_HOME CARGO_TARGET_DIR RUST_BACKTRACE \
        http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY \
        NES_KERNEL_LANE NES_KERNEL_ACCEL NES_KERNEL_TIMEOUT NES_KERNEL_CPUS NES_KERNEL_MEMORY; do
        if [ -n "${!v+x}" ]; then keep+=("$v=${!v}"); fi
    done
    exec env -i "${keep[@]}" PATH="$(deps_clean_path)" LANG=C.UTF-8 NES_TEST_CLEAN_ENV=1 \
        bash "$PWD/scripts/test.sh" "$@"
fi
# shellcheck source=/dev/null
source scripts/deps.sh

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS
root=false
[ "$(id -u)" -eq 0 ] && root=true

# --- dependencies -------------------------------------------------------------
step "dependencies (scripts/deps.sh test)"
if $root; then
    deps_ensure test
else
    report=$(deps_report test)
    if [ -n "$report" ]; then
        echo "not root, so not installing: $report" >&2
        exit 1
    fi
fi
if $root || [ "${CI:-}" = true ]; then
    # Every root test must run here: a skip would be a pass that tested nothing.
    export NES_REQUIRE_ROOT=1 NES_REQUIRE_CONTAINERD=1
else
    echo "NOTE: not root: root tests will SKIP (run as root for the whole suite)"
fi

# --- lint ----------------------------------------------------------------------
step "rustfmt"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "shellcheck"
shellcheck scripts/*.sh scripts/kernel/*.sh .ci/run
step "manifests and examples (offline, Kubernetes 1.34)"
bash scripts/validate-manifests.sh

# --- tests -----------------------------------------------------------------------
step "cargo nextest (workspace)"
mkdir -p target
# The end-to-end tests (tests/, package nes-tests) run nes-agent, nes-shim and nescli: built
# here once, and NES_TEST_BINS_BUILT tells their own up-to-date check (nes_tests::bins) so.
cargo build --workspace --bins --quiet
export NES_TEST_BINS_BUILT=1
# Passing tests' output is shown at the end so that their SKIP lines are visible.
set +e
cargo nextest run --workspace --no-fail-fast --success-output final --failure-output immediate-final \
    2>&1 | tee target/nextest.log
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || { echo "FAILED: cargo nextest exited $status"; exit "$status"; }
echo
echo "SKIP lines in the host run:"
skips=$(grep -ho 'SKIP .*' target/nextest.log | sort -u || true)
echo "${skips:-  none}"
# Only a link kind the host kernel lacks may skip (the VM lane runs those tests).
not_kinds=$(grep -v ': kernel lacks ' <<<"$skips" || true)
if [ -n "${NES_REQUIRE_ROOT:-}" ] && [ -n "$not_kinds" ]; then
    echo "FAILED: tests skipped for another reason than a kernel link kind:"
    echo "$not_kinds"
    exit 1
fi

if [ -x scripts/test-kernel.sh ]; then
    step "real-kernel lane (scripts/test-kernel.sh)"
    bash scripts/test-kernel.sh
fi

step "all tests passed in $((SECONDS - started)) s"
