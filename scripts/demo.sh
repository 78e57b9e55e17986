#!/usr/bin/env bash
# The main job on one host: a network namespace stands in for a pod, the standalone agent
# serves it on @nes inside it, and `ip netns exec demo-0 nescli ...` is the application.
# Run as root (no sudo needed). Installs what it needs first (scripts/deps.sh demo: protoc
# for the build, iproute2). Cleans up on exit, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "demo.sh needs root (it creates network namespaces)"; exit 1; }
# shellcheck source=/dev/null
source scripts/deps.sh
export PATH
PATH="$(deps_clean_path):$PATH"
deps_ensure demo

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

cargo build --quiet --release -p nes-agent -p nes-cli
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d)
agent_pid=""
cleanup() {
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
    [ -n "${watch_pid:-}" ] && kill "$watch_pid" 2>/dev/null
    ip netns del demo-0 2>/dev/null || true
    ip link del demo-host 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

start_agent() {
    NES_LOG=info "$bin/nes-agent" standalone --state-dir "$work/state" \
        --admin-socket "$work/admin.sock" >>"$work/agent.log" 2>&1 &
    agent_pid=$!
}
app() { ip netns exec demo-0 env NES_MANAGER=demo-app "$bin/nescli" "$@"; }

say "A pod: network namespace demo-0 with eth0, a veth to the host (as a CNI would make it)"
run ip netns add demo-0
run ip link add demo-host type veth peer name eth0 netns demo-0
ip link set demo-host up
ip -n demo-0 link set lo up
ip -n demo-0 link set eth0 up
run ip -n demo-0 addr add 10.244.0.5/24 dev eth0

say "Start the agent (standalone): it binds @nes inside demo-0"
start_agent
echo "agent pid $agent_pid, log $work/agent.log"

say "The application asks for addresses, an extra interface, routes and an MTU"
run app configure \
    --interface eth0 --mtu 1450 --address 10.10.0.5/24 --address fd00:10::5/64 \
    --interface br0 --type bridge --address 192.168.50.1/24 \
    --route 10.20.0.0/16,via=10.10.0.1,dev=eth0 --route fd00:20::/64,dev=eth0
run app wait --for=applied --timeout 20s
run app status
run ip -n demo-0 -br addr
run ip -n demo-0 route show proto 78
run ip -n demo-0 -6 route show proto 78

say "Watch events while the link goes down and up from outside"
app watch -o table > "$work/watch.out" 2>&1 &
watch_pid=$!
app wait --for=applied --timeout 10s >/dev/null
run ip link set demo-host down
run ip link set demo-host up
for _ in $(seq 100); do grep -q 'LinkUp' "$work/watch.out" && grep -q 'LinkDown' "$work/watch.out" && break; sleep 0.1; done
kill "$watch_pid" 2>/dev/null || true
watch_pid=""
cat "$work/watch.out"

say "Restart the agent: nothing is lost, nothing is rewritten"
before=$(ip -n demo-0 -br addr; ip -n demo-0 route show proto 78; ip -n demo-0 -6 route show proto 78)
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
start_agent
run app wait --for=applied --timeout 20s
after=$(ip -n demo-0 -br addr; ip -n demo-0 route show proto 78; ip -n demo-0 -6 route show proto 78)
if [ "$before" = "$after" ]; then echo "kernel state identical after the restart"; else echo "CHANGED:"; diff <(echo "$before") <(echo "$after") || true; exit 1; fi
grep -o 'converge pass.*' "$work/agent.log" | tail -n 2 || true
run app get

say "Bad input is refused with the field and the reason, and changes nothing"
app configure --interface eth0 --vlan-id 5 || echo "(exit $?)"

say "Done: cleaning up"
