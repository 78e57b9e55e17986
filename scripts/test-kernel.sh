#!/usr/bin/env bash
# The real-kernel test lane: runs the workspace's `netns_*` integration tests
# inside a full Debian kernel in a virtual machine, because the machine's own
# kernel may lack link kinds nes configures (vlan, dummy, ipvlan, bond).
#
# Usage (from anywhere, as root on Debian/Ubuntu):  bash scripts/test-kernel.sh
#
# Steps:
#  1. installs what it needs, idempotently, from the one list in scripts/deps.sh
#     (group kernel: qemu-system-x86, linux-image-amd64, busybox-static, protoc...
#     from apt; virtme-ng from PyPI, pinned, in a venv under /opt/nes-kernel-lane)
#     and runs with the system PATH plus that venv's bin/;
#  2. finds the Debian kernel image (/boot/vmlinuz-VER and /lib/modules/VER of
#     the version linux-image-amd64 depends on, not the running kernel);
#  3. probes KVM with a 15 s throw-away boot, else uses software emulation;
#  4. reports which link kinds the host kernel lacks (their tests skip there);
#  5. builds the test binaries on the host (`cargo test --no-run`) and the workspace's
#     binaries they drive (`cargo build --bins`);
#  6. boots the VM with virtme-ng: the host's root filesystem is shared
#     read-only (so the tree and target/ are too), one host temp dir is shared
#     read-write for results. In the VM, scripts/kernel/guest.sh first proves
#     it can create every kind in NES_REQUIRE_KINDS, then runs each test binary
#     as root with NES_REQUIRE_KINDS set, so that none of them can skip;
#  7. kills the VM after NES_KERNEL_TIMEOUT seconds whatever happens;
#  8. prints a summary and exits non-zero if anything failed or did not run.
#
# Environment (all optional):
#  NES_REQUIRE_KINDS     kinds the VM must have         (vlan,dummy,ipvlan,bond)
#  NES_KERNEL_TESTS      regex of test targets to run   (^netns_)
#  NES_KERNEL_TEST_ARGS  extra arguments for each test binary (e.g. a filter)
#  NES_KERNEL_ACCEL      auto | kvm | tcg               (auto)
#  NES_KERNEL_TIMEOUT    seconds before the VM is killed (1300)
#  NES_KERNEL_CPUS       guest vCPUs                     (2)
#  NES_KERNEL_MEMORY     guest memory                    (1G)
#  NES_KERNEL_ALLOW_NO_TESTS=1  only boot and probe when no test target matches
#  NES_KERNEL_LANE=off   skip the lane loudly (refused when CI=true)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
kdir="$repo/scripts/kernel"

: "${NES_REQUIRE_KINDS:=vlan,dummy,ipvlan,bond}"
: "${NES_KERNEL_TESTS:=^netns_}"
: "${NES_KERNEL_TEST_ARGS:=}"
: "${NES_KERNEL_ACCEL:=auto}"
: "${NES_KERNEL_TIMEOUT:=1300}"
: "${NES_KERNEL_CPUS:=2}"
: "${NES_KERNEL_MEMORY:=1G}"
: "${NES_KERNEL_ALLOW_NO_TESTS:=}"

say() { printf 'kernel-lane: %s\n' "$*"; }
die() {
    printf 'kernel-lane: FAIL: %s\n' "$*" >&2
    exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

t_start=$(now)

if [[ "${NES_KERNEL_LANE:-}" == off ]]; then
    if [[ "${CI:-}" == true ]]; then
        die "NES_KERNEL_LANE=off is refused in CI: the lane is what proves vlan/ipvlan/bond work"
    fi
    say "SKIPPED ENTIRELY (NES_KERNEL_LANE=off): vlan, dummy, ipvlan, bond tests did NOT run anywhere"
    exit 0
fi

# --- 1. dependencies -------------------------------------------------------------
# The one list (scripts/deps.sh, group `kernel`). vng starts `virtme-run` through the
# shell, so the venv's bin/ goes on PATH here, ahead of the system PATH this lane runs with.
t_deps=$(now)
# shellcheck source=/dev/null
source "$repo/scripts/deps.sh"
export PATH
PATH="$NES_KERNEL_VENV/bin:$(deps_clean_path)"
if [[ $(id -u) -eq 0 ]]; then
    deps_ensure kernel || die "dependencies missing (above)"
else
    report=$(deps_report kernel)
    [[ -z "$report" ]] || die "not root, so not installing: $report"
fi
vng="$NES_KERNEL_VENV/bin/vng"
command -v virtme-run >/dev/null || die "virtme-run is not on PATH ($NES_KERNEL_VENV/bin)"
say "dependencies ready in $(since "$t_deps") s"

# --- 2. the Debian kernel ------------------------------------------------------
kver=$(dpkg-query -W -f='${Depends}' linux-image-amd64 | grep -oE 'linux-image-[0-9][^ ,]*' | head -n 1)
kver=${kver#linux-image-}
[[ -n "$kver" ]] || die "cannot tell which kernel linux-image-amd64 depends on"
kernel="/boot/vmlinuz-$kver"
[[ -r "$kernel" ]] || die "Debian kernel image $kernel is missing or unreadable (linux-image-amd64 installed?)"
[[ -r "/lib/modules/$kver/modules.dep" ]] ||
    die "/lib/modules/$kver/modules.dep is missing: the VM kernel would have no modules (vlan, bond...)"
say "VM kernel: $kernel (host runs $(uname -r))"

# --- 3. KVM or software emulation -------------------------------------------------
# A guest with no root filesystem panics right after boot; panic=-1 + -no-reboot
# make qemu exit then. Under working KVM that takes 1-3 s; here a KVM guest
# either dies at start (MSR assertion) or hangs, which the timeout catches.
kvm_works() {
    [[ -r /dev/kvm && -w /dev/kvm ]] || return 1
    local out
    out=$(timeout --kill-after=2 15 qemu-system-x86_64 -accel kvm -cpu host -m 256 -smp 1 \
        -nodefaults -nographic -display none -serial stdio -no-reboot \
        -kernel "$kernel" -append "console=ttyS0 panic=-1 loglevel=4" </dev/null 2>&1) || return 1
    grep -qa 'Kernel panic' <<<"$out"
}
vng_accel=()
case "$NES_KERNEL_ACCEL" in
kvm) accel=kvm ;;
tcg) accel=tcg ;;
auto)
    t_probe=$(now)
    if kvm_works; then accel=kvm; else accel=tcg; fi
    say "KVM probe: $accel ($(since "$t_probe") s)"
    ;;
*) die "NES_KERNEL_ACCEL must be auto, kvm or tcg" ;;
esac
[[ $accel == tcg ]] && vng_accel=(--disable-kvm)

# --- 4. what the host kernel lacks ------------------------------------------------
host_kinds=$(bash "$kdir/probe-kinds.sh" 2>&1 || true)
host_missing=$(awk '$1 == "kind" && $3 == "missing" { printf "%s ", $2 }' <<<"$host_kinds")
host_has=$(awk '$1 == "kind" && $3 == "ok" { printf "%s ", $2 }' <<<"$host_kinds")
say "host kernel $(uname -r) has: ${host_has:-?}"
say "host kernel lacks: ${host_missing:-nothing} (tests needing these skip on the host and run in the VM)"

# --- 5. build the test binaries on the host --------------------------------------
rundir=$(mktemp -d "${TMPDIR:-/tmp}/nes-kernel-lane.XXXXXX")
vm_name="nes-kernel-lane-$$"
cleanup() {
    local pid
    # The VM runs in timeout's process group and dies with it; this is a last
    # resort for a qemu of this very run (matched by its unique -name).
    for pid in $(pgrep -f -- "-name $vm_name" 2>/dev/null || true); do
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$rundir"
}
trap cleanup EXIT

t_build=$(now)
targets=$(cargo metadata --no-deps --format-version 1 | python3 "$kdir/list-tests.py" targets "$NES_KERNEL_TESTS")
: >"$rundir/tests.tsv"
if [[ -z "$targets" ]]; then
    if [[ "$NES_KERNEL_ALLOW_NO_TESTS" != 1 ]]; then
        die "no test target matches '$NES_KERNEL_TESTS' (set NES_KERNEL_ALLOW_NO_TESTS=1 to only boot and probe)"
    fi
    say "no test target matches '$NES_KERNEL_TESTS': the VM will only probe the kinds"
else
    test_flags=()
    while read -r t; do test_flags+=(--test "$t"); done <<<"$targets"
    say "building $(wc -l <<<"$targets") test target(s) on the host: $(tr '\n' ' ' <<<"$targets")"
    # Same workspace-wide feature resolution as `cargo nextest run --workspace`,
    # so the artifacts of the host run are reused.
    cargo test --workspace --no-run "${test_flags[@]}" --message-format=json-render-diagnostics \
        >"$rundir/cargo.json" || die "building the test binaries failed"
    # The end-to-end tests (package nes-tests) drive nes-agent, nes-shim and nescli; in the
    # VM they find them next to their own executables (target/debug), without cargo.
    cargo build --workspace --bins --quiet || die "building the workspace's binaries failed"
    python3 "$kdir/list-tests.py" executables "$NES_KERNEL_TESTS" <"$rundir/cargo.json" >"$rundir/tests.tsv"
    [[ -s "$rundir/tests.tsv" ]] || die "cargo built no test executable matching '$NES_KERNEL_TESTS'"
    say "built in $(since "$t_build") s"
fi

{
    printf 'NES_REQUIRE_KINDS=%q\n' "$NES_REQUIRE_KINDS"
    printf 'NES_KERNEL_TEST_ARGS=%q\n' "$NES_KERNEL_TEST_ARGS"
    printf 'RUST_BACKTRACE=%q\n' "${RUST_BACKTRACE:-1}"
    # Software emulation runs the guest many times slower: latency bounds in tests scale.
    printf 'NES_TEST_TIME_SCALE=%q\n' "$([[ $accel == tcg ]] && echo 20 || echo 1)"
} >"$rundir/env"

# --- 6./7. the VM -----------------------------------------------------------------
say "booting the VM ($accel, $NES_KERNEL_CPUS vCPU, $NES_KERNEL_MEMORY, timeout ${NES_KERNEL_TIMEOUT}s)"
t_vm=$(now)
# qemu reopens /proc/self/fd/1 and 2 (truncating a log file they point to):
# give it a pipe. The guest's stdout and stderr come out merged, in order.
set +e
timeout --kill-after=10 "$NES_KERNEL_TIMEOUT" \
    "$vng" --run "$kernel" "${vng_accel[@]}" --force-9p --name "$vm_name" \
    --cpus "$NES_KERNEL_CPUS" --memory "$NES_KERNEL_MEMORY" --user root \
    --rwdir "$rundir" --cwd "$repo" \
    --exec "bash $(printf %q "$kdir/guest.sh") $(printf %q "$rundir")" </dev/null 2>&1 | cat
vm_rc=${PIPESTATUS[0]}
set -e
vm_secs=$(since "$t_vm")

# --- 8. summary ----------------------------------------------------------------------
echo
say "==== summary"
say "VM: kernel $kver, $accel, wall $vm_secs s"
if [[ -s "$rundir/guest.txt" ]]; then
    say "VM boot (kernel start to test runner): $(awk '$1 == "uptime_at_start" { print $2 }' "$rundir/guest.txt") s of guest time"
fi
if [[ -s "$rundir/probe.txt" ]]; then
    say "VM kernel has: $(awk '$3 == "ok" { printf "%s ", $2 }' "$rundir/probe.txt")"
    vm_missing=$(awk '$3 == "missing" { printf "%s ", $2 }' "$rundir/probe.txt")
    say "VM kernel lacks: ${vm_missing:-nothing}"
fi

fail=()
total_passed=0 total_failed=0 total_skips=0 total_secs=0
if [[ -s "$rundir/results.tsv" ]]; then
    say "test binaries run in the VM (NES_REQUIRE_KINDS=$NES_REQUIRE_KINDS):"
    while IFS=$'\t' read -r label rc passed failed ignored skips secs; do
        verdict=ok
        [[ $rc -eq 0 ]] || {
            verdict=FAILED
            fail+=("$label")
        }
        printf '  %-7s %-40s %s passed, %s failed, %s ignored, %s SKIP lines, %s s\n' \
            "$verdict" "$label" "$passed" "$failed" "$ignored" "$skips" "$secs"
        log="$rundir/logs/${label//\//_}.log"
        sed -nE 's/^test (.*) \.\.\. (ok|FAILED|ignored.*)$/            \2  \1/p' "$log"
        grep '^SKIP ' "$log" | sed 's/^/            /' || true
        total_passed=$((total_passed + passed))
        # A binary that died without a result line counts as one failure.
        if [[ $failed =~ ^[0-9]+$ ]]; then
            total_failed=$((total_failed + failed))
        elif [[ $rc -ne 0 ]]; then
            total_failed=$((total_failed + 1))
        fi
        total_skips=$((total_skips + skips))
        total_secs=$((total_secs + secs))
    done <"$rundir/results.tsv"
fi

problem=
if [[ $vm_rc -eq 124 || $vm_rc -eq 137 ]]; then
    problem="the VM was killed after ${NES_KERNEL_TIMEOUT}s"
    if [[ -s "$rundir/running" ]]; then
        problem+=" while running $(cat "$rundir/running")"
    elif [[ ! -s "$rundir/guest.txt" ]]; then
        problem+=" before its test runner started (boot too slow or hung)"
    fi
elif [[ ! -s "$rundir/status" ]]; then
    problem="the VM exited (status $vm_rc) before the test runner finished: it did not boot, or the guest crashed"
elif [[ $(cat "$rundir/status") -ne 0 ]]; then
    if [[ -s "$rundir/probe.txt" ]] && ! grep -q . "$rundir/results.tsv"; then
        problem="the VM kernel cannot create every kind in NES_REQUIRE_KINDS (see the probe above)"
    else
        problem="test binaries failed in the VM: ${fail[*]:-?} (their output is above)"
    fi
elif [[ $vm_rc -ne 0 ]]; then
    problem="vng exited with status $vm_rc although the guest reported success"
fi
# Every listed binary must have reported.
expected=$(grep -c . "$rundir/tests.tsv" || true)
reported=$(grep -c . "$rundir/results.tsv" 2>/dev/null || true)
if [[ -z "$problem" && "$reported" -ne "$expected" ]]; then
    problem="only $reported of $expected test binaries reported a result"
fi

say "test binaries ran for $total_secs s in the VM; VM wall $vm_secs s; lane total $(since "$t_start") s"
echo "kernel-vm: $total_passed passed, $total_failed failed, $total_skips skipped"
[[ -z "$problem" ]] || die "$problem"
say "OK"
