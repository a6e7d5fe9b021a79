#!/usr/bin/env bash
# Usage: scripts/rabbitmq4-root.sh [--build-deps] [ROOT]
#
# Makes (once) and prepares (every time) the Debian 13 root that RabbitMQ 4 runs in:
# `debootstrap --variant=minbase trixie`, then `rabbitmq-server` (4.0.5, Erlang 27) and
# `librabbitmq-dev` (rabbitmq-c 0.15) installed inside it. Debian 12, this machine, ships
# RabbitMQ 3.10; the root gives a second, current broker beside it without touching the
# machine's own packages. scripts/broker.sh runs its node in the root when RMQ_VERSION=4.
#
# --build-deps also installs (once) what this machine's Swift toolchain needs to build and
# test the package inside the root, against Debian 13's glibc and rabbitmq-c 0.15
# (scripts/test-rabbitmq-c-015.sh): BUILD_PACKAGES below.
#
# ROOT defaults to $RMQ_ROOT or /var/cache/rmqswift/trixie and is kept between runs (making
# it takes about a minute and needs the network; reusing it, none). Every run mounts /proc
# in it (the node reads it) and checks the packages are there. Needs root.
# Exit status 3: the root is not made yet, or lacks the build packages asked for, and the
# Debian mirror cannot be reached.
set -euo pipefail

BUILD_DEPS=0
if [[ "${1:-}" == --build-deps ]]; then
    BUILD_DEPS=1
    shift
fi
ROOT="${1:-${RMQ_ROOT:-/var/cache/rmqswift/trixie}}"
# The broker, and the C library the package links against.
PACKAGES=(rabbitmq-server librabbitmq-dev)
# For building in the root with this machine's toolchain (swift.org's build for Debian 12,
# which runs on Debian 13), after swift.org's own list for Debian: binutils (ld: the driver
# links with the system linker), libc6-dev, libgcc-14-dev and libstdc++-14-dev (crt files,
# C and C++ headers and runtime), libcurl4t64, libxml2 and libncurses6 (loaded by the
# toolchain's Foundation and by swift-frontend; minbase lacks them), pkgconf (how SwiftPM
# finds librabbitmq.pc) and git (SwiftPM's checkouts; they are made outside the root).
BUILD_PACKAGES=(binutils libc6-dev libgcc-14-dev libstdc++-14-dev libcurl4t64 libxml2 libncurses6
    pkgconf git)
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
READY="$ROOT/.rmqswift-ready"

die() { echo "rabbitmq4-root.sh: $*" >&2; exit 1; }
[[ "$(id -u)" -eq 0 ]] || die "must run as root (debootstrap, chroot, mount)"
[[ "$ROOT" == /* && "$ROOT" != / ]] || die "the root must be an absolute path other than /, not '$ROOT'"

# One run at a time per root: the nodes of a cluster start in parallel, and each would
# otherwise make (or mount) the same root at once.
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9

mirror_reachable() {
    python3 - "$MIRROR/dists/trixie/Release" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=20).read(64)
EOF
}

if [[ ! -e "$READY" ]]; then
    if ! mirror_reachable; then
        echo "rabbitmq4-root.sh: $MIRROR cannot be reached; cannot make $ROOT" >&2
        exit 3
    fi
    # Never delete a directory this script did not make: a root without our marker that is
    # not empty is somebody's.
    if [[ -d "$ROOT" && -n "$(ls -A "$ROOT")" ]]; then
        die "$ROOT exists without $READY; it is not one this script made (set RMQ_ROOT to another path)"
    fi
    command -v debootstrap >/dev/null || {
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    # Made beside its final place and renamed at the end, so that an interrupted run
    # never leaves a half-made root that looks ready.
    work="$ROOT.partial"
    # An interrupted earlier run may have left mounts in it (debootstrap mounts /proc, /sys
    # and /dev/pts while it installs): detach them, innermost first, before deleting it.
    tac /proc/mounts | while read -r _ target _; do
        case "$target" in "$work"/*) umount -l "$target" || true ;; esac
    done
    rm -rf "$work"
    mkdir -p "$(dirname "$ROOT")"
    echo "rabbitmq4-root.sh: debootstrap trixie into $work (about 30-60 s)" >&2
    debootstrap --variant=minbase trixie "$work" "$MIRROR" >"$work.log" 2>&1 \
        || { tail -20 "$work.log" >&2; die "debootstrap failed (log: $work.log)"; }
    # Packages must not start services in the root; the node is started by broker.sh.
    printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d"
    chmod +x "$work/usr/sbin/policy-rc.d"
    # Erlang resolves the node's host name, localhost, through /etc/hosts.
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$work/etc/hosts"
    mount -t proc proc "$work/proc"
    echo "rabbitmq4-root.sh: installing rabbitmq-server and librabbitmq-dev in the root" >&2
    if ! chroot "$work" env DEBIAN_FRONTEND=noninteractive sh -c \
            'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"' sh "${PACKAGES[@]}" \
            >>"$work.log" 2>&1; then
        tail -20 "$work.log" >&2
        umount "$work/proc" || true
        die "apt-get install in the root failed (log: $work.log)"
    fi
    umount "$work/proc"
    chroot "$work" dpkg-query -W -f='${Version}\n' rabbitmq-server >"$work/.rmqswift-ready"
    rmdir "$ROOT" 2>/dev/null || true
    mv "$work" "$ROOT"
    rm -f "$work.log"
fi

mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
if [[ $BUILD_DEPS -eq 1 ]]; then
    missing=()
    for pkg in "${BUILD_PACKAGES[@]}"; do
        [[ "$(chroot "$ROOT" dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" == installed ]] \
            || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        if ! mirror_reachable; then
            echo "rabbitmq4-root.sh: $MIRROR cannot be reached; cannot install ${missing[*]} in $ROOT" >&2
            exit 3
        fi
        echo "rabbitmq4-root.sh: installing ${missing[*]} in the root" >&2
        log="$ROOT.build-deps.log"
        chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive sh -c \
            'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"' sh "${missing[@]}" \
            >"$log" 2>&1 || { tail -20 "$log" >&2; die "apt-get install in the root failed (log: $log)"; }
        rm -f "$log"
    fi
fi
[[ -x "$ROOT/usr/lib/rabbitmq/bin/rabbitmq-server" ]] \
    || die "$ROOT has no rabbitmq-server; stop its nodes, delete $ROOT and run this again"
echo "rabbitmq4-root.sh: $ROOT ready (rabbitmq-server $(cat "$READY"))" >&2
