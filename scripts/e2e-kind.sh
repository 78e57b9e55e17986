#!/usr/bin/env bash
# End-to-end test of an installed nes on a throwaway kind cluster (Kubernetes 1.34,
# one control-plane and two workers):
#
#   1. build the images (Dockerfile.agent, Dockerfile.operator) and load them into kind;
#   2. `kubectl apply -f manifests/`; wait for the CRDs, the operator (and the caBundle it
#      publishes) and an agent on every node;
#   3. deploy examples/statefulset.yaml (label network-config/runtime-ip: "true") in a
#      namespace enforcing Pod Security `restricted`; check the webhook injected nes-shim;
#   4. run nescli from the agent image inside pod web-0 (an ephemeral container, so it uses
#      web-0's @nes) to add an address to eth0, a macvlan net1 on eth0 with an address, and a
#      route via net1; assert them with `ip` in the app container, the CR's owner and status,
#      and that web-1 got nothing;
#   5. delete web-0: the StatefulSet recreates it (new UID, new netns) and nes re-applies;
#   6. upgrade the agent to a new image tag through the NesInstallation (the operator's gated
#      node-by-node rollout): the application pods keep their UID, restart counts and Ready
#      transition time, net1 keeps its ifindex, and nothing is lost;
#   7. delete the StatefulSet: its NetworkConfigurations are garbage-collected;
#   8. deleting the NesInstallation removes what it rendered and keeps the CRDs; then
#      `kubectl delete -f manifests/` uninstalls everything.
#
# Needs docker (or ENGINE=podman with KIND_EXPERIMENTAL_PROVIDER=podman), kind >= 0.30,
# kubectl >= 1.31, and registry access for the kind node image, the Rust/distroless build
# images and busybox. It cannot run on the CI machine (no container engine); CI shellchecks it.
#
#   scripts/e2e-kind.sh
#   KEEP_CLUSTER=1 scripts/e2e-kind.sh      # keep the cluster afterwards (kubectl --context kind-nes-e2e)
#   SKIP_BUILD=1 scripts/e2e-kind.sh        # use images already built with the tags below
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-nes-e2e}
NODE_IMAGE=${NODE_IMAGE:-kindest/node:v1.34.0}
ENGINE=${ENGINE:-docker}
TIMEOUT=${TIMEOUT:-180s}
WAIT_SECONDS=${TIMEOUT%s}
# The tags manifests/ reference (imagePullPolicy IfNotPresent: kind has them loaded).
AGENT_IMAGE=nes-agent:0.1.0
OPERATOR_IMAGE=nes-operator:0.1.0
ROLLED_AGENT_IMAGE=nes-agent:0.1.0-rolled
APP_IMAGE=$(awk '/^ *image:/ { print $2; exit }' examples/statefulset.yaml)
NS=nes-e2e

log() { printf '\n==> %s\n' "$*"; }
ok() { printf '  ok: %s\n' "$*"; }
die() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }
indent() { sed "s/^/$1/"; }
k() { kubectl --context "kind-$CLUSTER" "$@"; }

# Runs "$@" until it succeeds or WAIT_SECONDS pass.
wait_for() {
    local what=$1 deadline=$((SECONDS + WAIT_SECONDS))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${WAIT_SECONDS}s waiting for $what"
        sleep 2
    done
    ok "$what"
}

for tool in "$ENGINE" kind kubectl; do
    command -v "$tool" >/dev/null || die "needs $tool"
done

work=$(mktemp -d)
created=""
cleanup() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -n "$created" ]; then
        echo "--- diagnostics ---"
        k get nodes,pods -A -o wide || true
        k -n "$NS" get networkconfigurations -o yaml || true
        k get events -A --sort-by=.lastTimestamp | tail -40 || true
        k -n nes-system logs -l app.kubernetes.io/name=nes-operator --prefix --tail=80 || true
        k -n nes-system logs -l app.kubernetes.io/name=nes-agent --prefix --tail=80 || true
    fi
    if [ -n "$created" ] && [ -z "${KEEP_CLUSTER:-}" ]; then
        kind delete cluster --name "$CLUSTER" || true
    fi
    rm -rf "$work"
    if [ "$status" -eq 0 ]; then echo "e2e-kind: PASSED"; else echo "e2e-kind: FAILED" >&2; fi
    exit "$status"
}
trap cleanup EXIT

# --- 1. cluster and images ------------------------------------------------------------
log "kind cluster $CLUSTER ($NODE_IMAGE)"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    die "a kind cluster named $CLUSTER exists; delete it (kind delete cluster --name $CLUSTER) or set CLUSTER"
fi
cat >"$work/kind.yaml" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
EOF
created=1
kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config "$work/kind.yaml" --wait "$TIMEOUT"

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building images"
    "$ENGINE" build -f Dockerfile.agent -t "$AGENT_IMAGE" .
    "$ENGINE" build -f Dockerfile.operator -t "$OPERATOR_IMAGE" .
fi
"$ENGINE" tag "$AGENT_IMAGE" "$ROLLED_AGENT_IMAGE"
"$ENGINE" image inspect "$APP_IMAGE" >/dev/null 2>&1 || "$ENGINE" pull "$APP_IMAGE"
log "loading images into kind"
for image in "$AGENT_IMAGE" "$ROLLED_AGENT_IMAGE" "$OPERATOR_IMAGE" "$APP_IMAGE"; do
    "$ENGINE" save -o "$work/image.tar" "$image"
    kind load image-archive "$work/image.tar" --name "$CLUSTER"
    ok "$image"
done

# --- 2. install -------------------------------------------------------------------------
log "kubectl apply -f manifests/ (the CRDs first: 50-installation.yaml is a custom resource)"
k apply -f manifests/crds.yaml
k wait --for=condition=Established --timeout="$TIMEOUT" \
    crd/networkconfigurations.nes.network-config.io crd/networkcares.nes.network-config.io \
    crd/nesinstallations.nes.network-config.io
k apply -f manifests/
k -n nes-system rollout status deployment/nes-operator --timeout="$TIMEOUT"
ca_bundle_published() {
    [ -n "$(k get mutatingwebhookconfiguration nes-operator -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]
}
wait_for "the operator patched the webhook's caBundle" ca_bundle_published
wait_for "the operator published ConfigMap nes-ca" k -n nes-system get configmap nes-ca
k -n nes-system rollout status daemonset/nes-agent --timeout="$TIMEOUT"
nodes=$(k get nodes -o name | wc -l)
agents=$(k -n nes-system get pods -l app.kubernetes.io/name=nes-agent --field-selector=status.phase=Running -o name | wc -l)
[ "$agents" -eq "$nodes" ] || die "$agents agents running for $nodes nodes"
ok "an agent on each of the $nodes nodes"

# --- 3. the sample workload ----------------------------------------------------------------
log "sample StatefulSet in namespace $NS (Pod Security restricted)"
k create namespace "$NS"
k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted
k -n "$NS" apply -f examples/statefulset.yaml
for pod in web-0 web-1; do
    k -n "$NS" wait --for=create "pod/$pod" --timeout="$TIMEOUT" >/dev/null
    k -n "$NS" wait --for=jsonpath='{.status.phase}'=Running "pod/$pod" --timeout="$TIMEOUT" >/dev/null
    shim=$(k -n "$NS" get pod "$pod" -o jsonpath='{.spec.containers[?(@.name=="nes-shim")].image}')
    [ "$shim" = "$AGENT_IMAGE" ] || die "$pod: nes-shim not injected (containers: $(k -n "$NS" get pod "$pod" -o jsonpath='{.spec.containers[*].name}'))"
    ok "$pod running, nes-shim injected from $shim"
done

# Exit code of ephemeral container $2 of pod $1; fails while it has not terminated.
ephemeral_exit_code() {
    local code
    code=$(k -n "$NS" get pod "$1" \
        -o jsonpath="{.status.ephemeralContainerStatuses[?(@.name==\"$2\")].state.terminated.exitCode}")
    [ -n "$code" ] && echo "$code"
}

# Runs nescli from the agent image in an ephemeral container of pod $1: it shares the pod's
# network namespace, so it talks to that pod's @nes. Prints nescli's output; returns its exit code.
debug_count=0
nescli_in() {
    local pod=$1 name
    shift
    debug_count=$((debug_count + 1))
    name="nescli-$debug_count"
    echo "  \$ nescli $* (in $pod)"
    k -n "$NS" debug "pod/$pod" --container "$name" --image "$AGENT_IMAGE" \
        --image-pull-policy IfNotPresent --profile restricted --quiet -- /usr/local/bin/nescli "$@" >/dev/null \
        || die "kubectl debug $pod failed"
    wait_for "nescli ($name) finished" ephemeral_exit_code "$pod" "$name"
    k -n "$NS" logs "pod/$pod" -c "$name" | indent "    "
    return "$(ephemeral_exit_code "$pod" "$name")"
}

in_app() {
    local pod=$1
    shift
    k -n "$NS" exec "$pod" -c app -- "$@"
}

# The configuration step 4 declares, as the kernel in the pod shows it.
assert_configured() {
    local pod=$1 out pod_ip
    out=$(in_app "$pod" ip -o addr show dev eth0)
    grep -q 'inet 172\.30\.0\.10/32' <<<"$out" || die "$pod: eth0 lacks 172.30.0.10/32: $out"
    pod_ip=$(k -n "$NS" get pod "$pod" -o jsonpath='{.status.podIP}')
    grep -q "inet $pod_ip/" <<<"$out" || die "$pod: eth0 lost the CNI's address $pod_ip: $out"
    ok "$pod: eth0 has 172.30.0.10/32 and still the CNI's $pod_ip"
    out=$(in_app "$pod" ip -o link show dev net1) || die "$pod: no net1"
    grep -q 'net1@eth0' <<<"$out" || die "$pod: net1 is not a link on eth0: $out"
    ok "$pod: net1 is a macvlan on eth0"
    out=$(in_app "$pod" ip -o addr show dev net1)
    grep -q 'inet 192\.168\.50\.10/24' <<<"$out" || die "$pod: net1 lacks 192.168.50.10/24: $out"
    ok "$pod: net1 has 192.168.50.10/24"
    out=$(in_app "$pod" ip route show)
    grep -Eq '^10\.250\.0\.0/16 via 192\.168\.50\.1 +dev net1 .*metric 100' <<<"$out" \
        || die "$pod: route 10.250.0.0/16 via 192.168.50.1 dev net1 metric 100 missing: $out"
    ok "$pod: route 10.250.0.0/16 via 192.168.50.1 dev net1 metric 100"
}

applied() {
    [ "$(k -n "$NS" get networkconfiguration "$1" \
        -o jsonpath='{.status.conditions[?(@.type=="Applied")].status}')" = True ]
}

# --- 4. configure from inside the pod ---------------------------------------------------
log "nescli in web-0: an address, a macvlan and a route"
nescli_in web-0 --timeout 60s configure --manager e2e \
    --interface eth0 --address 172.30.0.10/32 \
    --interface net1 --type macvlan --parent eth0 --mode bridge --address 192.168.50.10/24 \
    --route 10.250.0.0/16,via=192.168.50.1,dev=net1,metric=100 \
    || die "nescli configure failed"
nescli_in web-0 --timeout 60s wait --for=applied || die "web-0's configuration was not applied"
nescli_in web-0 status || die "nescli status failed"
assert_configured web-0
owner=$(k -n "$NS" get networkconfiguration web-0 -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
[ "$owner" = StatefulSet/web ] || die "NetworkConfiguration web-0 is owned by '$owner', not StatefulSet/web"
ok "NetworkConfiguration web-0 is owned by StatefulSet/web"
wait_for "NetworkConfiguration web-0 reports Applied=True" applied web-0
k -n "$NS" wait --for=condition=Ready pod/web-0 --timeout="$TIMEOUT" >/dev/null
ok "web-0 is Ready (its configuration is applied)"
k -n "$NS" get networkconfigurations
if in_app web-1 ip -o link show dev net1 >/dev/null 2>&1; then
    die "web-1 has a net1: one pod's configuration reached another"
fi
ok "web-1 has no net1 (a pod configures only itself)"

# --- 5. pod restart: new sandbox, configuration re-applied ---------------------------------
log "delete web-0: recreated by the StatefulSet, configuration re-applied"
old_uid=$(k -n "$NS" get pod web-0 -o jsonpath='{.metadata.uid}')
old_inode=$(k -n "$NS" get networkconfiguration web-0 -o jsonpath='{.status.netns.inode}')
k -n "$NS" delete pod web-0 --wait --timeout="$TIMEOUT"
k -n "$NS" wait --for=create pod/web-0 --timeout="$TIMEOUT" >/dev/null
new_uid=$(k -n "$NS" get pod web-0 -o jsonpath='{.metadata.uid}')
[ "$new_uid" != "$old_uid" ] || die "web-0 kept its UID"
k -n "$NS" wait --for=condition=Ready pod/web-0 --timeout="$TIMEOUT" >/dev/null
ok "web-0 recreated (UID $old_uid -> $new_uid) and Ready"
new_netns() {
    local inode
    inode=$(k -n "$NS" get networkconfiguration web-0 -o jsonpath='{.status.netns.inode}')
    [ -n "$inode" ] && [ "$inode" != "$old_inode" ] && applied web-0
}
wait_for "status describes the new network namespace (inode $old_inode -> new) and Applied=True" new_netns
assert_configured web-0

# --- 6. agent upgrade: applications untouched ----------------------------------------------
log "roll the agent to $ROLLED_AGENT_IMAGE: application pods untouched"
# UID, each container's restart count, and when Ready last changed (any flip changes it).
snapshot() {
    k -n "$NS" get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name} uid={.metadata.uid} {range .status.containerStatuses[*]}{.name}:restarts={.restartCount} {end}ready-since={.status.conditions[?(@.type=="Ready")].lastTransitionTime}{"\n"}{end}'
}
net1_index() { in_app web-0 ip -o link show dev net1 | cut -d: -f1; }
before=$(snapshot)
index_before=$(net1_index)
indent "  before: " <<<"$before"
# Through the NesInstallation: the operator replaces agent pods node by node and passes a node
# only on its new agent's clean upgrade report (zero writes to converged pods, no readiness
# change); a disturbed node pauses the rollout with Degraded=True, which fails here.
k patch nesinstallation nes --type merge -p "{\"spec\":{\"agent\":{\"image\":\"$ROLLED_AGENT_IMAGE\"}}}"
rolled_version=${ROLLED_AGENT_IMAGE##*:}
installation_done() {
    local s
    s=$(k get nesinstallation nes -o jsonpath='{.status.observedVersion} {.status.conditions[?(@.type=="Progressing")].reason} {.status.conditions[?(@.type=="Degraded")].status}')
    [ "$s" = "$rolled_version AsExpected False" ]
}
deadline=$((SECONDS + 4 * WAIT_SECONDS)) # node by node: one agent start after another
until installation_done; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        k get nesinstallation nes -o yaml | indent "  "
        die "the NesInstallation did not finish the rollout to $rolled_version"
    fi
    sleep 2
done
ok "NesInstallation nes: every node upgraded to $rolled_version, not Degraded"
k get nesinstallation nes -o jsonpath='{range .status.nodeUpgrades.*}{.version} {.result}{"\n"}{end}' | indent "  nodeUpgrades: "
images=$(k -n nes-system get pods -l app.kubernetes.io/name=nes-agent \
    -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | sort -u)
[ "$images" = "$ROLLED_AGENT_IMAGE" ] || die "agents run $images after the roll"
ok "every agent runs $ROLLED_AGENT_IMAGE"
nescli_in web-0 --timeout 60s wait --for=applied || die "web-0 not Applied after the agent roll"
after=$(snapshot)
indent "  after:  " <<<"$after"
[ "$before" = "$after" ] || die "application pods changed across the agent roll"
ok "no application pod restarted, was replaced, or changed readiness"
[ "$(net1_index)" = "$index_before" ] || die "net1 was recreated (ifindex $index_before -> $(net1_index))"
ok "net1 kept ifindex $index_before (not recreated)"
assert_configured web-0
applied web-0 || die "NetworkConfiguration web-0 is not Applied after the agent roll"
ok "NetworkConfiguration web-0 still Applied"

# --- 7. owner deleted: custom resources cleaned up ------------------------------------------
log "delete the StatefulSet: its NetworkConfigurations go with it"
k -n "$NS" delete statefulset web --wait --timeout="$TIMEOUT"
k -n "$NS" wait --for=delete networkconfiguration/web-0 --timeout="$TIMEOUT"
k -n "$NS" wait --for=delete pod/web-0 pod/web-1 --timeout="$TIMEOUT"
left=$(k -n "$NS" get networkconfigurations -o name)
[ -z "$left" ] || die "NetworkConfigurations left behind: $left"
ok "no NetworkConfiguration left in $NS"

# --- 8. uninstall ---------------------------------------------------------------------------
log "delete the NesInstallation: what it rendered goes, the CRDs stay"
k delete nesinstallation nes --wait --timeout="$TIMEOUT"
for rendered in daemonset/nes-agent service/nes-agent; do
    k -n nes-system wait --for=delete "$rendered" --timeout="$TIMEOUT" >/dev/null 2>&1 || true
    if k -n nes-system get "$rendered" >/dev/null 2>&1; then die "$rendered outlived its NesInstallation"; fi
done
k wait --for=delete mutatingwebhookconfiguration/nes-operator --timeout="$TIMEOUT" >/dev/null 2>&1 || true
if k get mutatingwebhookconfiguration/nes-operator >/dev/null 2>&1; then die "the pod webhook outlived its NesInstallation"; fi
k get crd networkconfigurations.nes.network-config.io >/dev/null || die "deleting the NesInstallation removed a CRD"
ok "agent DaemonSet, its Service and the pod webhook garbage-collected; CRDs kept"

log "kubectl delete -f manifests/"
# --ignore-not-found: deleting the namespace first may remove its objects before kubectl gets to them.
k delete -f manifests/ --ignore-not-found --wait --timeout="$TIMEOUT"
for gone in namespace/nes-system mutatingwebhookconfiguration/nes-operator \
    validatingwebhookconfiguration/nes-operator \
    crd/networkconfigurations.nes.network-config.io crd/networkcares.nes.network-config.io \
    clusterrole/nes-operator clusterrole/nes-agent; do
    if k get "$gone" >/dev/null 2>&1; then die "$gone still exists after uninstall"; fi
done
ok "namespace, webhook, CRDs and cluster roles removed"
