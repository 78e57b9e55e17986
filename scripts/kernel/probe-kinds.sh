#!/usr/bin/env bash
# Which link kinds can the running kernel create?
#
# Usage: probe-kinds.sh [REQUIRED_KINDS]
#   Creates one link of each kind in a fresh, throw-away network namespace
#   (`unshare --net`, so nothing is left behind) and prints one line per kind:
#       kind <name> ok
#       kind <name> missing <error from the kernel>
#   REQUIRED_KINDS is a comma separated list (e.g. vlan,dummy,ipvlan,bond):
#   the exit status is 1 when any of them is missing, 0 otherwise.
#
# Runs on the host (to report which kinds its kernel lacks) and inside the
# kernel-lane VM (scripts/test-kernel.sh) to prove the VM kernel has them all
# before any test runs. Needs root and iproute2. The kernel loads the modules
# itself (rtnl-link-* aliases), which is also what the engine relies on.
set -uo pipefail

required="${1:-}"

if [[ "${NES_PROBE_INNER:-}" != 1 ]]; then
    if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
        echo "probe-kinds: needs unshare (util-linux) and ip (iproute2)" >&2
        exit 2
    fi
    # Re-exec in a private network namespace: links vanish with it.
    NES_PROBE_INNER=1 exec unshare --net -- bash "$0" "$@"
fi

# Each kind: the commands that create it. Parents are a veth pair (present
# in every kernel the project targets) so that a missing `dummy` does not
# hide whether `vlan` works.
ip link add nesp0 type veth peer name nesp1 2>/dev/null || true
ip link set nesp0 up 2>/dev/null || true
# (nesp0 carries the macvlan and vlans, nesp1 the ipvlans: the kernel refuses
# macvlan and ipvlan on one parent.)

declare -A cmd=(
    [veth]="ip link add nesv0 type veth peer name nesv1"
    [bridge]="ip link add nesbr0 type bridge"
    [dummy]="ip link add nesd0 type dummy"
    [vlan]="ip link add link nesp0 name nesp0.10 type vlan id 10"
    [qinq]="ip link add link nesp0 name nesp0.s100 type vlan protocol 802.1ad id 100 && ip link add link nesp0.s100 name nesp0.s100.10 type vlan protocol 802.1Q id 10"
    [macvlan]="ip link add link nesp0 name nesm0 type macvlan mode bridge"
    [ipvlan]="ip link add link nesp1 name nesi0 type ipvlan mode l2 && ip link add link nesp1 name nesi1 type ipvlan mode l3"
    [bond]="ip link add nesb0 type bond mode active-backup"
    [vxlan]="ip link add nesx0 type vxlan id 42 dstport 4789 local 127.0.0.1"
)
order=(veth bridge dummy vlan qinq macvlan ipvlan bond vxlan)

missing_required=()
for kind in "${order[@]}"; do
    if err=$(bash -c "${cmd[$kind]}" 2>&1); then
        echo "kind $kind ok"
    else
        echo "kind $kind missing ${err//$'\n'/ }"
        if [[ ",$required," == *",$kind,"* ]]; then
            missing_required+=("$kind")
        fi
    fi
done

if ((${#missing_required[@]})); then
    echo "probe-kinds: required kinds missing: ${missing_required[*]}" >&2
    exit 1
fi
exit 0
