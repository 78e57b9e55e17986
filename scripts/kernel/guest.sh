#!/usr/bin/env bash
# Runs INSIDE the kernel-lane VM (started by scripts/test-kernel.sh).
#
# Usage: guest.sh RUNDIR
#   RUNDIR is a host directory shared read-write with the guest. The host puts
#   there:
#     env        shell assignments to source (NES_REQUIRE_KINDS, ...)
#     tests.tsv  LABEL <TAB> EXECUTABLE <TAB> PACKAGE_DIR, one test binary a line
#   and this script writes back:
#     guest.txt    kernel release, vCPUs, uptime at start (boot time)
#     probe.txt    output of probe-kinds.sh in the VM
#     logs/*.log   each test binary's full output
#     results.tsv  LABEL rc passed failed ignored skip_lines seconds
#     running      label of the binary being run (left behind on a timeout)
#     status       the exit status of this script, written last
# Everything is also printed to stdout, which the VM streams to the host.
set -uo pipefail

rundir="${1:?usage: guest.sh RUNDIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

finish() {
    echo "$1" >"$rundir/status"
    sync
    exit "$1"
}

# shellcheck source=/dev/null
source "$rundir/env"
export NES_REQUIRE_KINDS RUST_BACKTRACE NES_TEST_TIME_SCALE NES_KERNEL_VM=1 NES_REQUIRE_ROOT=1
# --show-output: passing tests' captured stderr too, so any SKIP line is seen and counted.
read -r -a test_args <<<"--show-output ${NES_KERNEL_TEST_ARGS:-}"

read -r up _ </proc/uptime
{
    echo "kernel $(uname -r)"
    echo "vcpus $(nproc)"
    echo "uptime_at_start $up"
} >"$rundir/guest.txt"
echo "kernel-lane[vm]: kernel $(uname -r), $(nproc) vCPU, booted in ${up}s"
mkdir -p "$rundir/logs"
: >"$rundir/results.tsv"

echo "kernel-lane[vm]: probing link kinds (required: $NES_REQUIRE_KINDS)"
bash "$here/probe-kinds.sh" "$NES_REQUIRE_KINDS" 2>&1 | tee "$rundir/probe.txt"
if [[ ${PIPESTATUS[0]} -ne 0 ]]; then
    echo "kernel-lane[vm]: FAIL: the VM kernel cannot create every required kind"
    finish 1
fi

overall=0
while IFS=$'\t' read -r label exe pkgdir; do
    [[ -n "$label" ]] || continue
    log="$rundir/logs/${label//\//_}.log"
    echo "$label" >"$rundir/running"
    echo
    echo "kernel-lane[vm]: ==== $label"
    t0=$(date +%s)
    # Like `cargo test`: run from the package directory, with its manifest dir.
    (cd "$pkgdir" && CARGO_MANIFEST_DIR="$pkgdir" exec "$exe" "${test_args[@]}") 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    secs=$(($(date +%s) - t0))
    # libtest: "test result: ok. 3 passed; 0 failed; 2 ignored; 0 measured; ..."
    summary=$(grep -E '^test result: ' "$log" | tail -n 1)
    passed=$(sed -nE 's/.* ([0-9]+) passed;.*/\1/p' <<<"$summary")
    failed=$(sed -nE 's/.* ([0-9]+) failed;.*/\1/p' <<<"$summary")
    ignored=$(sed -nE 's/.* ([0-9]+) ignored;.*/\1/p' <<<"$summary")
    skips=$(grep -c '^SKIP ' "$log")
    if [[ $rc -ne 0 && -z "$summary" ]]; then
        echo "kernel-lane[vm]: $label exited with status $rc before reporting a result"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rc" "${passed:-0}" \
        "${failed:-?}" "${ignored:-0}" "$skips" "$secs" >>"$rundir/results.tsv"
    [[ $rc -eq 0 ]] || overall=1
done <"$rundir/tests.tsv"
rm -f "$rundir/running"
finish "$overall"
