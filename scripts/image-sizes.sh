#!/usr/bin/env bash
# Builds the static release binaries the images ship, the way Dockerfile.agent and
# Dockerfile.operator build them (musl target, release profile, stripped), checks that they
# are static, and estimates each image's size as base image + binaries.
#
# No container engine runs on the CI machine, so the images themselves are not built there;
# this script is how their size is measured. Needs cargo, rustup, protoc, readelf, jq and
# musl-gcc (Debian packages protobuf-compiler, binutils, jq, musl-tools).
#
#   scripts/image-sizes.sh
#   TARGET=aarch64-unknown-linux-musl scripts/image-sizes.sh   # another architecture
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "image-sizes: takes no arguments (see --help)" >&2; exit 2 ;;
esac

TARGET=${TARGET:-$(uname -m)-unknown-linux-musl}
# gcr.io/distroless/static-debian12:nonroot: ca-certificates, tzdata, /etc/passwd with
# nonroot (65532). Its published uncompressed size, in bytes; an estimate, not a measurement.
BASE_BYTES=${BASE_BYTES:-2000000}
AGENT_BINS=(nes-agent nes-shim nescli)
OPERATOR_BINS=(nes-operator)

for tool in cargo rustup protoc readelf jq musl-gcc; do
    command -v "$tool" >/dev/null || { echo "image-sizes: needs $tool" >&2; exit 2; }
done
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

# Binaries the workspace defines now (nes-shim arrives with the in-cluster agent).
mapfile -t defined < <(cargo metadata --no-deps --format-version 1 \
    | jq -r '.packages[].targets[] | select(.kind | index("bin")) | .name')
has_bin() { printf '%s\n' "${defined[@]}" | grep -qx "$1"; }

build_args=()
for bin in "${AGENT_BINS[@]}" "${OPERATOR_BINS[@]}"; do
    if has_bin "$bin"; then build_args+=(--bin "$bin"); else echo "NOTE: $bin is not in this tree yet"; fi
done

# Same settings as the Dockerfiles: static musl binaries (ring's C code built with musl-gcc),
# symbols stripped.
export CARGO_PROFILE_RELEASE_STRIP=symbols
export "CC_${TARGET//-/_}=musl-gcc"
cargo build --release --locked --target "$TARGET" "${build_args[@]}"
out="${CARGO_TARGET_DIR:-target}/$TARGET/release"

size_of() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

report() {
    local image=$1 total=$BASE_BYTES bin path bytes
    shift
    echo "$image:"
    for bin in "$@"; do
        path="$out/$bin"
        if [ ! -x "$path" ]; then
            echo "  $bin: not built (missing from this tree)"
            continue
        fi
        if readelf -l "$path" | grep -q 'INTERP' || readelf -d "$path" | grep -q 'NEEDED'; then
            echo "image-sizes: $path is not static" >&2
            exit 1
        fi
        bytes=$(size_of "$path")
        total=$((total + bytes))
        echo "  $bin: $(mib "$bytes") (static)"
    done
    echo "  estimated image: $(mib "$total") uncompressed (base ~$(mib "$BASE_BYTES") + binaries)"
}

echo
echo "target $TARGET; sizes of stripped static binaries; image = distroless static + binaries"
report "nes-agent image" "${AGENT_BINS[@]}"
report "nes-operator image" "${OPERATOR_BINS[@]}"
