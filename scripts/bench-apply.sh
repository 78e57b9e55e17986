#!/usr/bin/env bash
# Benchmark: from request to applied, nes beside `ip`, in one table. Needs root.
#
#   scripts/bench-apply.sh        # builds target/release/{nes-agent,nescli} if missing
#   NES_AGENT=path/nes-agent NESCLI=path/nescli ADDRS=500 ROUTES=1000 RUNS=7 ONE_RUNS=100 \
#     scripts/bench-apply.sh
#
# Rows (process start included wherever a command is timed, for nes and for ip alike):
#  - one address: `nescli configure --wait` through a standalone agent's admin socket, p99 of
#    ONE_RUNS runs, beside `ip -n NS addr add` (p99 of as many), and both medians. A nescli
#    without --wait is timed as `nescli configure` then `nescli wait --for=applied`. Each run
#    replaces the bench manager's one address: nes deletes the last one and adds the next.
#    Both namespaces' eth0 has a CNI address (10.244.0.5/24), as a pod's has.
#  - ADDRS addresses + ROUTES routes on a veth in a fresh namespace: `nescli configure -f
#    spec.json --wait` (request to applied; JSON is the API's own format) beside
#    `ip -n NS -batch`, median of RUNS runs; and the same from the YAML file, for reference.
#    nes gives each IPv4 address its broadcast, as CNI plugins do (netlink's AddrAdd), so
#    ip's batch says `brd +` too: both tools ask the kernel for the same objects.
#  - for reference, `ip -batch` again while `ip monitor` follows the namespace's notifications:
#    nes must follow them too (its observed state is fed by them), and a reader that keeps up
#    with a burst of writes costs the writer its wake-ups.
#  - the agent's pass alone for that change (its "converge pass ... elapsed_ms" log line, which
#    leaves out the time the pass waited for the record's save; an agent without the line:
#    the pass `nes-agent apply` prints), and the one-shot `nes-agent apply`.
#  - a converged status read of that pod inside the agent: curl's time to first byte less
#    its time to send the request, median of 50 reads.
#
# The agent serves only this script's namespaces: each is bind-mounted into a private
# --netns-dir, never the host's /var/run/netns.
# ADDRS defaults to 500: api::validate caps a pod at 512 addresses (api/src/limits.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
ADDRS=${ADDRS:-500}
ROUTES=${ROUTES:-1000}
RUNS=${RUNS:-7}
ONE_RUNS=${ONE_RUNS:-100}
AGENT=${NES_AGENT:-target/release/nes-agent}
CLI=${NESCLI:-target/release/nescli}
[ "$(id -u)" = 0 ] || { echo "bench-apply: needs root" >&2; exit 2; }
if [ ! -x "$AGENT" ] || [ ! -x "$CLI" ]; then
    cargo build --release -p nes-agent -p nes-cli --bin nes-agent --bin nescli
fi
command -v curl >/dev/null || { echo "bench-apply: needs curl" >&2; exit 2; }

work=$(mktemp -d)
tag="nesb$$"
agent_pid=
MON=
namespaces=()
cleanup() {
  [ -n "${BENCH_KEEP_LOG:-}" ] && cp "$work/agent.log" "$BENCH_KEEP_LOG"
  # An `ip monitor` left running when the script stops between monitor_ns and its kill.
  [ -n "$MON" ] && kill "$MON" 2>/dev/null
  if [ -n "$agent_pid" ]; then
    kill "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  for ns in "${namespaces[@]}"; do
    umount "$work/netns/$ns" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/netns" "$work/state"

# Inputs: the same objects for both tools.
{
  echo "interfaces:"
  echo "  - name: eth0"
  echo "    addresses:"
  for ((i = 0; i < ADDRS; i++)); do echo "      - 10.1.$((i / 250)).$((i % 250 + 1))/16"; done
  echo "routes:"
  for ((i = 0; i < ROUTES; i++)); do
    echo "  - dst: 172.$((16 + i / 256)).$((i % 256)).0/24"
    echo "    via: 10.1.255.254"
  done
} >"$work/spec.yaml"
{
  printf '{"interfaces":[{"name":"eth0","addresses":['
  for ((i = 0; i < ADDRS; i++)); do
    printf '%s"10.1.%d.%d/16"' "$([ $i = 0 ] || echo ,)" $((i / 250)) $((i % 250 + 1))
  done
  printf ']}],"routes":['
  for ((i = 0; i < ROUTES; i++)); do
    printf '%s{"dst":"172.%d.%d.0/24","via":"10.1.255.254"}' "$([ $i = 0 ] || echo ,)" $((16 + i / 256)) $((i % 256))
  done
  printf ']}\n'
} >"$work/spec.json"
{
  for ((i = 0; i < ADDRS; i++)); do echo "address add 10.1.$((i / 250)).$((i % 250 + 1))/16 brd + dev eth0"; done
  for ((i = 0; i < ROUTES; i++)); do echo "route add 172.$((16 + i / 256)).$((i % 256)).0/24 via 10.1.255.254 proto 78"; done
} >"$work/batch"

# A fresh namespace with eth0 (a veth whose peer stays inside), up; with "serve", also
# bind-mounted where the agent looks, and waited for until the agent serves it. Sets NS.
n_ns=0
fresh_ns() {
  local ns="$tag-$((n_ns++))"
  NS=$ns
  namespaces+=("$ns")
  ip netns add "$ns"
  ip -n "$ns" link add eth0 type veth peer name peer0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set peer0 up
  if [ "${1:-}" = serve ]; then
    touch "$work/netns/$ns"
    mount --bind "/var/run/netns/$ns" "$work/netns/$ns"
    local end=$((SECONDS + 20))
    until curl -sf --unix-socket "$work/admin.sock" http://nes/v1/pods | grep -q "\"$ns\""; do
      [ $SECONDS -lt $end ] || { echo "bench-apply: the agent never served $ns" >&2; exit 1; }
      sleep 0.05
    done
  fi
}

# Starts `ip monitor` in namespace $1 and waits until its socket has joined the groups
# (/proc/net/netlink inside the namespace lists it with its port id and groups). Sets MON.
monitor_ns() {
  ip -n "$1" monitor >/dev/null &
  MON=$!
  local end=$((SECONDS + 10))
  # shellcheck disable=SC2016 # an awk program, not shell
  until ip netns exec "$1" awk -v p="$MON" '$3 == p && $4 != "00000000" {f = 1} END {exit !f}' /proc/net/netlink; do
    [ $SECONDS -lt $end ] || { echo "bench-apply: ip monitor never subscribed" >&2; exit 1; }
  done
}

drop_ns() { umount "$work/netns/$1" 2>/dev/null || true; ip netns del "$1" 2>/dev/null || true; }

# Times a command (no fork for the clock), appends microseconds to file $1.
measure() {
  local out=$1; shift
  local t0=$EPOCHREALTIME
  "$@" >"$work/stdout"
  local t1=$EPOCHREALTIME
  echo "$((${t1/./} - ${t0/./}))" >>"$out"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
p99() { sort -n | awk '{a[NR]=$1} END {i = int(NR * 0.99 + 0.999); if (i < 1) i = 1; print a[i]}'; }

if "$CLI" configure --help | grep -q -- '--wait'; then has_wait=1; else has_wait=0; fi
nes() { "$CLI" --socket "$work/admin.sock" --pod "$1" "${@:2}"; }
# configure + wait: one process when nescli has --wait, else two.
configure_wait() {
  local ns=$1; shift
  if [ $has_wait = 1 ]; then
    nes "$ns" configure --manager bench --wait "$@"
  else
    nes "$ns" configure --manager bench "$@" && nes "$ns" wait --for=applied
  fi
}

NES_LOG=info "$AGENT" standalone --state-dir "$work/state" --netns-dir "$work/netns" \
  --admin-socket "$work/admin.sock" 2>"$work/agent.log" &
agent_pid=$!
end=$((SECONDS + 20))
until curl -sf --unix-socket "$work/admin.sock" http://nes/healthz >/dev/null; do
  [ $SECONDS -lt $end ] || { echo "bench-apply: the agent did not start" >&2; cat "$work/agent.log" >&2; exit 1; }
  sleep 0.05
done

# One address, ONE_RUNS times each, in namespaces whose eth0 has its CNI address, as a pod's
# has (nes's one address is then not the link's last IPv4 one, whose removal makes the
# kernel drop the link's IPv4 routes unannounced and the agent dump the namespace).
fresh_ns; ipns=$NS
ip -n "$ipns" addr add 10.244.0.5/24 dev eth0
fresh_ns serve; one=$NS
ip -n "$one" addr add 10.244.0.5/24 dev eth0
for ((r = 0; r < ONE_RUNS; r++)); do
  a="10.2.$((r / 250)).$((r % 250 + 1))/32"
  measure "$work/one-ip" ip -n "$ipns" addr add "$a" dev eth0
  measure "$work/one-nes" configure_wait "$one" --interface eth0 --address "$a"
done

# The big change, RUNS times each, a fresh namespace per run.
for ((r = 0; r < RUNS; r++)); do
  fresh_ns; ns=$NS
  measure "$work/big-ip" ip -n "$ns" -batch "$work/batch"
  drop_ns "$ns"
  fresh_ns; ns=$NS
  monitor_ns "$ns"
  measure "$work/big-ipmon" ip -n "$ns" -batch "$work/batch"
  kill "$MON"; wait "$MON" 2>/dev/null || true; MON=
  drop_ns "$ns"
  [ -n "${big:-}" ] && drop_ns "$big"
  fresh_ns serve; ns=$NS
  measure "$work/big-yaml" configure_wait "$ns" -f "$work/spec.yaml"
  drop_ns "$ns"
  fresh_ns serve; ns=$NS
  measure "$work/big-nes" configure_wait "$ns" -f "$work/spec.json"
  big=$ns
  fresh_ns; ns=$NS
  rm -f "$work/owned.json"
  measure "$work/oneshot" "$AGENT" apply --netns "/var/run/netns/$ns" -f "$work/spec.yaml" --state "$work/owned.json"
  # It prints the time of its pass ("... in 4.2 ms").
  sed -n 's/.* in \([0-9.]*\) ms$/\1/p' "$work/stdout" >>"$work/oneshot-pass"
  drop_ns "$ns"
done
# The last pod is converged: read its status.
for ((r = 0; r < 50; r++)); do
  curl -s -o /dev/null -w '%{time_pretransfer} %{time_starttransfer}\n' \
    --unix-socket "$work/admin.sock" "http://nes/v1/self/status?pod=$big" |
    awk '{printf "%d\n", ($2 - $1) * 1000000}' >>"$work/status"
done
# The daemon's passes with ops=ADDRS+ROUTES (the big ones), when it logs their time.
sed 's/\x1b\[[0-9;]*m//g' "$work/agent.log" | grep "converge pass" | grep "ops=$((ADDRS + ROUTES)) " |
  sed -n 's/.*elapsed_ms=\([0-9.]*\).*/\1/p' >"$work/daemon-pass" || true

ms() { awk -v u="$1" 'BEGIN {printf "%.2f", u / 1000}'; }
ratio() { awk -v n="$1" -v i="$2" 'BEGIN {printf "%.2fx", n / i}'; }
one_ip=$(p99 <"$work/one-ip"); one_nes=$(p99 <"$work/one-nes")
one_ip_med=$(median <"$work/one-ip"); one_nes_med=$(median <"$work/one-nes")
big_ip=$(median <"$work/big-ip"); big_ipmon=$(median <"$work/big-ipmon"); big_nes=$(median <"$work/big-nes"); big_yaml=$(median <"$work/big-yaml")
oneshot=$(median <"$work/oneshot")
if [ -s "$work/daemon-pass" ]; then
  pass_us=$(awk '{printf "%d\n", $1 * 1000}' "$work/daemon-pass" | median); pass_what="agent pass alone (daemon log)"
else
  pass_us=$(awk '{printf "%d\n", $1 * 1000}' "$work/oneshot-pass" | median); pass_what="nes pass alone (one-shot apply)"
fi
status_us=$(median <"$work/status")
wait_how=$([ $has_wait = 1 ] && echo "configure --wait" || echo "configure; wait")

echo "bench-apply: $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $ADDRS addresses + $ROUTES routes; whole processes"
printf '%-46s %10s %10s %8s %8s\n' "" "nes ms" "ip ms" "nes/ip" "goal"
printf '%-46s %10s %10s %8s %8s\n' "1 address, p99 of $ONE_RUNS: nescli $wait_how" "$(ms "$one_nes")" "$(ms "$one_ip")" "$(ratio "$one_nes" "$one_ip")" "<=2x"
printf '%-46s %10s %10s %8s %8s\n' "  the same, median of $ONE_RUNS" "$(ms "$one_nes_med")" "$(ms "$one_ip_med")" "$(ratio "$one_nes_med" "$one_ip_med")" "-"
printf '%-46s %10s %10s %8s %8s\n' "big change, request to applied (median $RUNS)" "$(ms "$big_nes")" "$(ms "$big_ip")" "$(ratio "$big_nes" "$big_ip")" "<=1.2x"
printf '%-46s %10s %10s %8s %8s\n' "  the same beside ip -batch + ip monitor" "$(ms "$big_nes")" "$(ms "$big_ipmon")" "$(ratio "$big_nes" "$big_ipmon")" "-"
printf '%-46s %10s %10s %8s %8s\n' "  the same from the YAML file" "$(ms "$big_yaml")" "$(ms "$big_ip")" "$(ratio "$big_yaml" "$big_ip")" "-"
printf '%-46s %10s %10s %8s %8s\n' "$pass_what" "$(ms "$pass_us")" "$(ms "$big_ip")" "$(ratio "$pass_us" "$big_ip")" "<=0.8x"
printf '%-46s %10s %10s %8s %8s\n' "one-shot nes-agent apply (median $RUNS)" "$(ms "$oneshot")" "$(ms "$big_ip")" "$(ratio "$oneshot" "$big_ip")" "-"
printf '%-46s %10s %10s %8s %8s\n' "converged status read in the agent (median 50)" "$(ms "$status_us")" "-" "-" "<=0.5ms"
