#!/usr/bin/env bash
# The one list of what building, running and testing nes need, and the one installer.
# demo.sh, test.sh and test-kernel.sh source this file and call `deps_ensure GROUP...`.
#
# Run directly:  scripts/deps.sh [--check] GROUP...
#   GROUP: build   Rust toolchain, a C compiler, protoc (containerd-client's build)
#          demo    build + iproute2                      (scripts/demo.sh)
#          test    build + what the test suite runs      (scripts/test.sh)
#          kernel  build + the VM lane's qemu, Debian kernel, busybox, virtme-ng venv
#                                                        (scripts/test-kernel.sh)
#   --check  only report what is missing (exit 1 if anything is), install nothing.
#
# Installing needs root and apt-get (Debian/Ubuntu); cargo tools go to cargo's bin dir, the
# virtme-ng venv to /opt/nes-kernel-lane (the VM sees /opt: its init comes from there).
# Every check is by what the scripts call (a command, a file, a Python module), so a tool
# installed some other way counts; a missing one is named with the package that has it.

# Each entry: PACKAGE CHECK. CHECK is a command name, an absolute path, `dpkg` (the package
# itself must be installed), `py:MODULE,...` (the system python3 imports them) or
# `static-busybox`.
DEPS_APT_BUILD=(
    "protobuf-compiler protoc"
    "gcc cc"
)
DEPS_APT_DEMO=(
    "iproute2 ip"
)
DEPS_APT_TEST=(
    "iproute2 ip"
    "iproute2 ss"
    "containerd containerd"
    "containerd ctr"
    "runc runc"
    "containernetworking-plugins /usr/lib/cni/loopback"
    "containernetworking-plugins /usr/lib/cni/bridge"
    "containernetworking-plugins /usr/lib/cni/macvlan"
    "containernetworking-plugins /usr/lib/cni/host-local"
    "containernetworking-plugins /usr/lib/cni/static"
    "shellcheck shellcheck"
    "e2fsprogs filefrag"
    "util-linux setpriv"
    "util-linux nsenter"
    "util-linux unshare"
    "mount mount"
    "procps sysctl"
    "procps pgrep"
    "procps kill"
    "tar tar"
    "python3 /usr/bin/python3"
    "python3-venv py:ensurepip,venv"
)
DEPS_APT_KERNEL=(
    "qemu-system-x86 qemu-system-x86_64"
    "linux-image-amd64 dpkg"
    "busybox-static static-busybox"
    "file file"
    "iproute2 ip"
    "util-linux unshare"
    "procps pgrep"
    "python3 /usr/bin/python3"
    "python3-venv py:ensurepip,venv"
)
# Cargo tools: CRATE VERSION COMMAND-CHECK
DEPS_CARGO_TEST=(
    "cargo-nextest 0.9.143 cargo-nextest"
)
# The VM lane's virtme-ng, pinned, in its own venv.
VIRTME_NG_VERSION=1.42
NES_KERNEL_VENV=/opt/nes-kernel-lane/venv

deps_say() { printf 'deps: %s\n' "$*" >&2; }

# The system PATH plus cargo's bin dir: what the scripts run with, whatever the caller had.
deps_clean_path() {
    printf '%s' "${CARGO_HOME:-$HOME/.cargo}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

static_busybox_path() {
    local b
    for b in busybox-static busybox.static busybox; do
        b=$(command -v "$b" 2>/dev/null) || continue
        if command -v file >/dev/null && ! file -L "$b" | grep -q 'dynamically linked'; then
            printf '%s\n' "$b"
            return 0
        fi
    done
    return 1
}

# Whether one CHECK holds (see the entries above).
deps_check_one() {
    local pkg=$1 check=$2
    case "$check" in
    dpkg) dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ;;
    py:*) /usr/bin/python3 -c "import ${check#py:}" 2>/dev/null ;;
    static-busybox) static_busybox_path >/dev/null ;;
    /*) [ -e "$check" ] ;;
    *) command -v "$check" >/dev/null ;;
    esac
}

# The entries of one group: `apt` or `cargo` GROUP.
deps_entries() {
    case "$1 $2" in
    "apt build") printf '%s\n' "${DEPS_APT_BUILD[@]}" ;;
    "apt demo") printf '%s\n' "${DEPS_APT_DEMO[@]}" ;;
    "apt test") printf '%s\n' "${DEPS_APT_TEST[@]}" ;;
    "apt kernel") printf '%s\n' "${DEPS_APT_KERNEL[@]}" ;;
    "cargo test") printf '%s\n' "${DEPS_CARGO_TEST[@]}" ;;
    esac
}

# What a CHECK looks for, for the `missing:` line.
deps_describe() {
    case "$1" in
    dpkg) printf '%s' "$2" ;;
    py:*) printf 'python3 modules %s' "${1#py:}" ;;
    static-busybox) printf 'a static busybox' ;;
    *) printf '%s' "$1" ;;
    esac
}

deps_groups() {
    local g
    for g in "$@"; do
        case "$g" in
        build) printf '%s\n' build ;;
        demo | test | kernel) printf '%s\n' build "$g" ;;
        *)
            deps_say "unknown group $g (build, demo, test, kernel)"
            return 2
            ;;
        esac
    done
}

# Prints "PACKAGE CHECK" for every missing apt entry of the groups, once per check.
deps_missing_apt() {
    local g entry seen=" " groups
    groups=$(deps_groups "$@") || return 2
    for g in $groups; do
        while read -r entry; do
            [[ $seen == *" $entry "* ]] && continue
            seen+="$entry "
            # shellcheck disable=SC2086
            deps_check_one $entry || printf '%s\n' "$entry"
        done < <(deps_entries apt "$g")
    done
}

# Prints "CRATE VERSION CHECK" for every missing cargo tool of the groups.
deps_missing_cargo() {
    local g entry groups
    groups=$(deps_groups "$@") || return 2
    for g in $groups; do
        while read -r entry; do
            [ -n "$entry" ] || continue
            command -v "${entry##* }" >/dev/null || printf '%s\n' "$entry"
        done < <(deps_entries cargo "$g")
    done
}

deps_venv_ok() {
    "$NES_KERNEL_VENV/bin/vng" --version 2>/dev/null | grep -qx "virtme-ng $VIRTME_NG_VERSION"
}

# One line naming everything missing (check and package), or nothing.
deps_report() {
    local missing=() entry
    deps_groups "$@" >/dev/null || return 2
    while read -r entry; do
        [ -n "$entry" ] && missing+=("$(deps_describe "${entry#* }" "${entry%% *}") (apt ${entry%% *})")
    done < <(deps_missing_apt "$@")
    while read -r entry; do
        [ -n "$entry" ] && missing+=("${entry%% *} (cargo install ${entry%% *})")
    done < <(deps_missing_cargo "$@")
    command -v cargo >/dev/null || missing+=("cargo (a Rust toolchain: https://rustup.rs)")
    if [[ " $* " == *" kernel "* ]] && ! deps_venv_ok; then
        missing+=("virtme-ng $VIRTME_NG_VERSION in $NES_KERNEL_VENV")
    fi
    ((${#missing[@]})) || return 0
    local line
    line=$(printf '%s, ' "${missing[@]}")
    printf 'missing: %s\n' "${line%, }"
}

deps_apt_install() {
    [ "$(id -u)" -eq 0 ] || return 1
    command -v apt-get >/dev/null || return 1
    deps_say "installing (apt) $*"
    apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

deps_install_venv() {
    deps_say "installing virtme-ng $VIRTME_NG_VERSION into $NES_KERNEL_VENV"
    /usr/bin/python3 -m venv --clear "$NES_KERNEL_VENV" &&
        "$NES_KERNEL_VENV/bin/python" -m pip install -q --disable-pip-version-check \
            "virtme-ng==$VIRTME_NG_VERSION" &&
        deps_venv_ok
}

# Installs what the groups need and is missing; returns non-zero after printing one
# `missing: ...` line if anything is still missing.
deps_ensure() {
    local pkgs=() entry
    deps_groups "$@" >/dev/null || return 2
    while read -r entry; do
        [ -n "$entry" ] || continue
        [[ " ${pkgs[*]} " == *" ${entry%% *} "* ]] || pkgs+=("${entry%% *}")
    done < <(deps_missing_apt "$@")
    if ((${#pkgs[@]})); then
        deps_apt_install "${pkgs[@]}" || deps_say "could not install ${pkgs[*]} (needs root and apt-get)"
    fi
    if command -v cargo >/dev/null; then
        while read -r entry; do
            [ -n "$entry" ] || continue
            read -r crate version _ <<<"$entry"
            deps_say "installing (cargo) $crate $version"
            cargo install --locked --quiet "$crate" --version "$version" || deps_say "cargo install $crate failed"
        done < <(deps_missing_cargo "$@")
    fi
    if [[ " $* " == *" kernel "* ]] && ! deps_venv_ok && deps_check_one python3-venv py:ensurepip,venv; then
        deps_install_venv || deps_say "could not install virtme-ng into $NES_KERNEL_VENV"
    fi
    local report
    report=$(deps_report "$@")
    [ -z "$report" ] || {
        printf '%s\n' "$report" >&2
        return 1
    }
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    export PATH
    PATH="$(deps_clean_path):$PATH"
    if [[ "${1:-}" == --check ]]; then
        shift
        report=$(deps_report "${@:-build}") || exit 2
        [ -z "$report" ] || { echo "$report"; exit 1; }
        echo "deps: nothing missing for ${*:-build}"
    else
        deps_ensure "${@:-build}"
        echo "deps: ready for ${*:-build}"
    fi
fi
