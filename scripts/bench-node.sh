#!/usr/bin/env bash
# A node's worth of pods against one standalone agent (issue #25): N network namespaces
# (default 110) served by one agent, configured in parallel through the admin socket, then
# restarted, "rebooted" (every namespace replaced) and attacked (stalled connections on one
# pod's @nes while another pod's status is read). Prints one table.
#
#   scripts/bench-node.sh [-n N] [--agent PATH] [--attack CONNECTIONS]
#
# Without --agent, builds the release agent into $CARGO_TARGET_DIR (or target/). Needs
# root, ip (iproute2) and python3 (scripts/deps.sh test). Touches nothing but the namespaces
# and files it creates (nesb-<pid>-*), and removes them on exit.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the tree

n=110
agent=""
attack=300
while [ $# -gt 0 ]; do
    case "$1" in
        -n) n="$2"; shift 2 ;;
        --agent) agent="$2"; shift 2 ;;
        --attack) attack="$2"; shift 2 ;;
        *) echo "usage: $0 [-n N] [--agent PATH] [--attack CONNECTIONS]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench-node.sh needs root (network namespaces)" >&2; exit 1; }
here="$(cd "$(dirname "$0")" && pwd)"
if [ -z "$agent" ]; then
    (cd "$here/.." && cargo build --release -q -p nes-agent --bin nes-agent)
    agent="${CARGO_TARGET_DIR:-$here/../target}/release/nes-agent"
fi

tag="nesb-$$"
dir="$(mktemp -d /tmp/"$tag".XXXX)"
mkdir -p "$dir/netns" "$dir/state"
ip netns add "$tag-host"
cleanup() {
    set +e
    [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
    for f in "$dir"/netns/*; do umount -l "$f" 2>/dev/null; done
    for ((i = 0; i < n; i++)); do ip netns del "$tag-$i" 2>/dev/null; done
    ip netns del "$tag-host" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

# Every pod: a fresh namespace bind-mounted into the agent's netns directory.
make_pods() {
    for ((i = 0; i < n; i++)); do
        ip netns del "$tag-$i" 2>/dev/null || true
        ip netns add "$tag-$i"
        ip -n "$tag-$i" link set lo up
        umount -l "$dir/netns/pod$i" 2>/dev/null || true  # the agent holds it open
        touch "$dir/netns/pod$i"
        mount --bind "/var/run/netns/$tag-$i" "$dir/netns/pod$i"
    done
}

start_agent() {
    t0=$(date +%s.%N)
    "$agent" standalone --state-dir "$dir/state" --netns-dir "$dir/netns" \
        --admin-socket "$dir/admin.sock" --host-netns "/var/run/netns/$tag-host" \
        >>"$dir/agent.log" 2>&1 &
    agent_pid=$!
}

make_pods
start_agent
export BENCH_DIR="$dir" BENCH_TAG="$tag" BENCH_N="$n" BENCH_ATTACK="$attack"
BENCH_AGENT_PID="$agent_pid" BENCH_T0="$t0" python3 "$here/bench-node.py" first

# Restart: every pod re-bound, and nothing written to any namespace. The kernel's own
# notifications (IPv6 duplicate address detection finishing) are waited out first.
for ((i = 0; i < n; i++)); do
    for ((w = 0; w < 300; w++)); do
        [ -z "$(ip -n "$tag-$i" -6 addr show tentative)" ] && break
        sleep 0.1
    done
done
for ((i = 0; i < n; i++)); do
    ip -n "$tag-$i" monitor link address route >"$dir/monitor-$i" 2>/dev/null &
    echo $! >>"$dir/monitors"
done
kill "$agent_pid"; wait "$agent_pid" || true
start_agent
BENCH_AGENT_PID="$agent_pid" BENCH_T0="$t0" python3 "$here/bench-node.py" restart
while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$dir/monitors"
echo "| netlink changes seen in the pods during the restart | $(cat "$dir"/monitor-* | wc -l) |" >>"$dir/table"

# Node reboot: every namespace replaced under the agent.
t0=$(date +%s.%N)
make_pods
BENCH_AGENT_PID="$agent_pid" BENCH_T0="$t0" python3 "$here/bench-node.py" reboot
BENCH_AGENT_PID="$agent_pid" python3 "$here/bench-node.py" attack
printf '| what (%s pods, agent %s) | measured |\n|---|---|\n' "$n" "$agent"
cat "$dir/table"
