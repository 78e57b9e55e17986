#!/usr/bin/env bash
# The operator under a flood of unauthenticated large bodies (issue #25): the real release
# nes-operator runs against a small fake API server (scripts/bench-operator-api.py: an
# in-memory object store, open watches, a TokenReview that knows one token) and is attacked
# by N clients at once (default 1000) on its HTTPS port (the /mutate-pods webhook, the
# cliserver with bad tokens) and its probe port, each declaring a large body (default
# 3 MiB) and sending a third of it then stalling, or all of it fast, and reconnecting
# whenever the operator answers or closes. Meanwhile an authenticated cliserver request and
# /healthz are timed. Prints one table: RSS idle, peak during and after each attack, what
# became of the attack's connections and how fast, and the goal (under 96 MiB).
#
#   scripts/bench-operator.sh [-n CLIENTS] [--seconds S] [--body BYTES] [--operator PATH]
#
# Without --operator, builds the release operator into $CARGO_TARGET_DIR (or target/).
# Needs python3 (scripts/deps.sh test); not root. Listens on 127.0.0.1 only, and removes
# what it creates (a temporary directory, its processes) on exit.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the tree

clients=1000
seconds=15
body=$((3 * 1024 * 1024))
operator=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n) clients="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --body) body="$2"; shift 2 ;;
        --operator) operator="$2"; shift 2 ;;
        *) echo "usage: $0 [-n CLIENTS] [--seconds S] [--body BYTES] [--operator PATH]" >&2; exit 2 ;;
    esac
done
here="$(cd "$(dirname "$0")" && pwd)"
if [ -z "$operator" ]; then
    (cd "$here/.." && cargo build --release -q -p nes-operator --bin nes-operator)
    operator="${CARGO_TARGET_DIR:-$here/../target}/release/nes-operator"
fi
# Every attack connection is a socket on both sides, and the attacker reconnects at once.
ulimit -n "$(ulimit -Hn)"

dir="$(mktemp -d /tmp/nes-bench-operator.XXXX)"
cleanup() {
    set +e
    for pid in "${operator_pid:-}" "${api_pid:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    rm -rf "$dir"
}
trap cleanup EXIT

# A free port for each of the operator's servers: bound, read and released by the kernel.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

token="bench-$$-$RANDOM$RANDOM"
python3 "$here/bench-operator-api.py" "$dir/api.port" "$token" 2>"$dir/api.log" &
api_pid=$!
for ((i = 0; i < 100; i++)); do
    [ -s "$dir/api.port" ] && break
    kill -0 "$api_pid" 2>/dev/null || { cat "$dir/api.log" >&2; exit 1; }
    sleep 0.1
done
[ -s "$dir/api.port" ] || { echo "bench-operator.sh: the fake API server did not start" >&2; exit 1; }
api_port="$(cat "$dir/api.port")"
cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster: {server: "http://127.0.0.1:$api_port"}
users:
- name: bench
  user: {token: operator-token}
contexts:
- name: bench
  context: {cluster: bench, user: bench, namespace: nes-system}
current-context: bench
EOF
https_port="$(free_port)"
probe_port="$(free_port)"
# The kubeconfig, not an in-cluster service account, whatever this shell runs in.
env -u KUBERNETES_SERVICE_HOST -u KUBERNETES_SERVICE_PORT KUBECONFIG="$dir/kubeconfig" \
    NES_LOG="${NES_LOG:-warn}" \
    "$operator" --namespace nes-system --pod-name bench-operator-0 --shim-image nes-agent:bench \
    --listen-addr "127.0.0.1:$https_port" --probe-addr "127.0.0.1:$probe_port" \
    >"$dir/operator.log" 2>&1 &
operator_pid=$!

export BENCH_DIR="$dir" BENCH_OPERATOR_PID="$operator_pid" BENCH_HTTPS="$https_port"
export BENCH_PROBES="$probe_port" BENCH_API="$api_port" BENCH_TOKEN="$token"
export BENCH_N="$clients" BENCH_SECONDS="$seconds" BENCH_BODY="$body"
if ! python3 "$here/bench-operator.py" measure; then
    echo "bench-operator.sh: the bench failed; the operator's log ends with:" >&2
    tail -n 20 "$dir/operator.log" >&2
    exit 1
fi
kill -0 "$operator_pid" || { echo "bench-operator.sh: the operator died" >&2; exit 1; }
printf '| what (%s clients, operator %s) | measured |\n|---|---|\n' "$clients" "$operator"
cat "$dir/table"
