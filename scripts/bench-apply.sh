#!/usr/bin/env bash
# Benchmark: `nes-agent apply` against `ip -n NS -batch FILE` for ADDRS IPv4 addresses and
# ROUTES routes on a veth in a fresh network namespace (whole processes, a fresh namespace per
# run, median of RUNS runs), then the converged re-apply. Needs root.
#
#   scripts/bench-apply.sh                    # builds target/release/nes-agent if missing
#   NES_AGENT=path/to/nes-agent ADDRS=500 ROUTES=1000 RUNS=7 scripts/bench-apply.sh
#
# ADDRS defaults to 500: api::validate caps a pod at 512 addresses (api/src/limits.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
ADDRS=${ADDRS:-500}
ROUTES=${ROUTES:-1000}
RUNS=${RUNS:-5}
BIN=${NES_AGENT:-target/release/nes-agent}
[ "$(id -u)" = 0 ] || { echo "bench-apply: needs root" >&2; exit 2; }
[ -x "$BIN" ] || cargo build --release -p nes-agent
command -v /usr/bin/time >/dev/null || { echo "bench-apply: needs /usr/bin/time (Debian package time)" >&2; exit 2; }

work=$(mktemp -d)
ns="nes-bench-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

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
  for ((i = 0; i < ADDRS; i++)); do echo "address add 10.1.$((i / 250)).$((i % 250 + 1))/16 dev eth0"; done
  for ((i = 0; i < ROUTES; i++)); do echo "route add 172.$((16 + i / 256)).$((i % 256)).0/24 via 10.1.255.254 proto 78"; done
} >"$work/batch"

fresh_ns() {
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link add eth0 type veth peer name peer0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set peer0 up
}

# Runs a command, appends "<ms> <maxrss_kb>" to file $1.
measure() {
  local out=$1; shift
  local t0 t1
  t0=$(date +%s%N)
  /usr/bin/time -f "%M" -o "$work/rss" "$@" >"$work/stdout"
  t1=$(date +%s%N)
  echo "$(((t1 - t0) / 1000)) $(cat "$work/rss")" >>"$out"
  # nes-agent prints the time of its pass itself ("... in 4.2 ms"): the pass without the
  # process around it.
  sed -n 's/.* in \([0-9.]*\) ms$/\1/p' "$work/stdout" >>"$out.pass"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

for ((r = 0; r < RUNS; r++)); do
  fresh_ns
  measure "$work/ip" ip -n "$ns" -batch "$work/batch"
  fresh_ns
  rm -f "$work/owned.json"
  measure "$work/nes" "$BIN" apply --netns "/var/run/netns/$ns" -f "$work/spec.yaml" --state "$work/owned.json"
  measure "$work/nes-re" "$BIN" apply --netns "/var/run/netns/$ns" -f "$work/spec.yaml" --state "$work/owned.json"
done
writes=$("$BIN" apply --netns "/var/run/netns/$ns" -f "$work/spec.yaml" --state "$work/owned.json")

ip_us=$(cut -d' ' -f1 "$work/ip" | median)
nes_us=$(cut -d' ' -f1 "$work/nes" | median)
re_us=$(cut -d' ' -f1 "$work/nes-re" | median)
ms() { awk -v u="$1" 'BEGIN {printf "%.1f", u / 1000}'; }
rss() { cut -d' ' -f2 "$1" | sort -n | tail -1; }
echo "bench-apply: $ADDRS IPv4 addresses + $ROUTES routes on a veth, median of $RUNS runs (whole processes)"
printf '%-34s %10s %14s\n' "" "median ms" "peak RSS KiB"
printf '%-34s %10s %14s\n' "ip -batch (first apply)" "$(ms "$ip_us")" "$(rss "$work/ip")"
printf '%-34s %10s %14s\n' "nes-agent apply (first apply)" "$(ms "$nes_us")" "$(rss "$work/nes")"
printf '%-34s %10s %14s\n' "nes-agent apply (converged)" "$(ms "$re_us")" "$(rss "$work/nes-re")"
pass_ms() { sort -n "$1.pass" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-34s %10s\n' "nes pass alone (first apply)" "$(pass_ms "$work/nes")"
printf '%-34s %10s\n' "nes pass alone (converged)" "$(pass_ms "$work/nes-re")"
awk -v n="$nes_us" -v i="$ip_us" -v r="$re_us" 'BEGIN {
  printf "ratio nes/ip first apply:      %.2fx (target <= 0.80x)\n", n / i
  printf "ratio converged/first apply:   %.1f%% (target < 5%%)\n", 100 * r / n }'
echo "converged re-apply: $writes"
