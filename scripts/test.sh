#!/usr/bin/env bash
# Runs every nes test on a fresh Debian/Ubuntu machine as root. Installs what the tests
# need first (idempotently), then: lint, the whole Rust suite, shell checks, and the
# real-kernel VM lane. Root tests skip loudly (SKIP lines) when not run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

# --- dependencies -------------------------------------------------------------
apt_packages=(iproute2 containerd runc containernetworking-plugins shellcheck protobuf-compiler
              util-linux procps)
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${apt_packages[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        step "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
else
    echo "NOTE: not root or no apt-get: not installing ${apt_packages[*]}; root tests will SKIP"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
# The containerd integration test must run, not skip, where containerd is installed.
if command -v containerd >/dev/null && [ "$(id -u)" -eq 0 ]; then
    export NES_REQUIRE_CONTAINERD=1
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
# Passing tests' output is shown at the end so that their SKIP lines are visible.
set +e
cargo nextest run --workspace --no-fail-fast --success-output final --failure-output immediate-final \
    2>&1 | tee target/nextest.log
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || { echo "FAILED: cargo nextest exited $status"; exit "$status"; }
echo
echo "SKIP lines in the host run (kinds or features this machine lacks):"
grep -ho 'SKIP .*' target/nextest.log | sort -u || echo "  none"

if [ -x scripts/test-kernel.sh ]; then
    step "real-kernel lane (scripts/test-kernel.sh)"
    bash scripts/test-kernel.sh
fi

step "all tests passed in $((SECONDS - started)) s"
