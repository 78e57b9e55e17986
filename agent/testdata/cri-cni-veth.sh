#!/bin/sh
# A CNI plugin for the containerd integration test (agent/tests/containerd_resolver.rs).
# containerd's CRI plugin insists on an "eth0" with an address in the sandbox; this makes
# one as a veth pair whose both ends stay inside the sandbox's netns, so nothing on the host
# changes. DEL has nothing to undo: the netns goes away with the sandbox.
set -eu
case "${CNI_COMMAND:-}" in
VERSION)
    echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}'
    ;;
ADD)
    cat >/dev/null
    nsenter --net="$CNI_NETNS" ip link set lo up
    nsenter --net="$CNI_NETNS" ip link add "$CNI_IFNAME" type veth peer name nes-peer0
    nsenter --net="$CNI_NETNS" ip link set nes-peer0 up
    nsenter --net="$CNI_NETNS" ip addr add 10.88.0.2/24 dev "$CNI_IFNAME"
    nsenter --net="$CNI_NETNS" ip link set "$CNI_IFNAME" up
    printf '{"cniVersion":"0.4.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"version":"4","address":"10.88.0.2/24","interface":0}]}\n' \
        "$CNI_IFNAME" "$CNI_NETNS"
    ;;
DEL | CHECK)
    cat >/dev/null
    ;;
*)
    echo "{\"code\":4,\"msg\":\"unknown CNI_COMMAND ${CNI_COMMAND:-}\"}"
    exit 1
    ;;
esac
