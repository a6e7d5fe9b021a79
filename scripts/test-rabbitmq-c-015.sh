#!/usr/bin/env bash
# Usage: scripts/test-rabbitmq-c-015.sh [extra `swift test` args, e.g. --xunit-output FILE]
#
# Builds the package (tests included, warnings as errors) and runs the broker-free tests
# (RabbitMQTests, RabbitMQPatternsTests) against rabbitmq-c 0.15: Debian 13's
# librabbitmq-dev, with its `rabbitmq-c/` header layout, its glibc and its OpenSSL, in the
# Debian 13 root that scripts/rabbitmq4-root.sh makes for RabbitMQ 4 (RMQ_ROOT, default
# /var/cache/rmqswift/trixie), with this machine's Swift toolchain.
#
# The toolchain and this checkout are bind-mounted into the root, in a mount namespace of
# this script's own (nothing shows in the root for the brokers and builds of others, and
# nothing stays mounted whatever ends the run; the trap detaches them too), and the build
# runs there, chrooted, in its own scratch path: .build-c015 (the machine's build in .build
# is untouched). Dependencies are resolved on this machine first (its network and SwiftPM
# cache); the root resolves nothing. Rebuilding is incremental.
#
# Exit status: 0 built and passed; 3 the root cannot be made or completed (no Debian mirror
# reachable); 4 not run as root (chroot, mount); anything else a failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd -P)"
ROOT="${RMQ_ROOT:-/var/cache/rmqswift/trixie}"
SCRATCH=.build-c015
FILTER='^(RabbitMQTests|RabbitMQPatternsTests)\.'

die() { echo "test-rabbitmq-c-015.sh: $*" >&2; exit 1; }

if [[ "${1:-}" != --in-namespace ]]; then
    [[ "$(id -u)" -eq 0 ]] || { echo "test-rabbitmq-c-015.sh: needs root (chroot, mount)" >&2; exit 4; }
    command -v swift >/dev/null || die "no swift in PATH"
    # The toolchain's usr directory (swift.org layout: usr/bin/swift).
    TOOLCHAIN="$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")"
    [[ -x "$TOOLCHAIN/bin/swift-frontend" ]] || die "$TOOLCHAIN is not a swift.org toolchain (no bin/swift-frontend)"
    # Mounting it at its own path must not hide the root's /usr.
    [[ "$TOOLCHAIN" != /usr ]] || die "the toolchain is installed in /usr; it must live in a directory of its own"
    [[ "$REPO/" != "$ROOT"/* && "$ROOT/" != "$REPO"/* ]] || die "the checkout and the root must not contain each other"

    rc=0
    scripts/rabbitmq4-root.sh --build-deps "$ROOT" || rc=$?
    [[ $rc -eq 0 ]] || exit "$rc"

    # Resolved here: the root may have no route to GitHub, and this reuses SwiftPM's cache.
    swift package resolve --scratch-path "$SCRATCH" >/dev/null

    export C015_ROOT="$ROOT" C015_TOOLCHAIN="$TOOLCHAIN" C015_REPO="$REPO"
    # A private mount namespace: the binds below vanish with it.
    exec unshare --mount --propagation private -- bash "$REPO/scripts/test-rabbitmq-c-015.sh" --in-namespace "$@"
fi
shift

# In the namespace, as root.
ROOT="$C015_ROOT" TOOLCHAIN="$C015_TOOLCHAIN" REPO="$C015_REPO"
MOUNTED=()
cleanup() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bind() { # bind SOURCE TARGET [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    MOUNTED+=("$2")
    if [[ "${3:-}" == ro ]]; then mount -o remount,bind,ro "$2"; fi
}
bind "$TOOLCHAIN" "$ROOT$TOOLCHAIN" ro
bind "$REPO" "$ROOT$REPO"

# HOME and TMPDIR in the scratch path too: SwiftPM's caches, locks and temporary files stay
# out of the root's /tmp, which its brokers use.
rm -rf "${REPO:?}/$SCRATCH/tmp"
mkdir -p "$REPO/$SCRATCH/home" "$REPO/$SCRATCH/tmp"
in_root() {
    chroot "$ROOT" env -i PATH="$TOOLCHAIN/bin:/usr/bin:/bin" HOME="$REPO/$SCRATCH/home" \
        TMPDIR="$REPO/$SCRATCH/tmp" LANG=C.UTF-8 TERM="${TERM:-dumb}" \
        bash -c 'cd "$1" && shift && "$@"' in_root "$REPO" "$@"
}

echo "test-rabbitmq-c-015.sh: rabbitmq-c $(in_root pkg-config --modversion librabbitmq)," \
    "glibc $(in_root ldd --version | head -1 | awk '{print $NF}') in $ROOT; $(in_root swift --version 2>/dev/null | head -1)"
[[ -e "$ROOT/usr/include/rabbitmq-c/amqp.h" ]] || die "the root's librabbitmq-dev has no rabbitmq-c/amqp.h"

t0=$SECONDS
in_root swift build --build-tests --scratch-path "$SCRATCH" --disable-automatic-resolution \
    -Xswiftc -warnings-as-errors
echo "test-rabbitmq-c-015.sh: build took $((SECONDS - t0)) s"

# The test binary must run against the root's library, not one from elsewhere.
tests_binary="$SCRATCH/debug/swift-rabbitmqPackageTests.xctest"
linked="$(in_root sh -c 'ldd "$1" | awk "/librabbitmq/ {print \$3}"' sh "$tests_binary")"
[[ -n "$linked" ]] || die "$tests_binary is not linked against librabbitmq"
echo "test-rabbitmq-c-015.sh: the tests use $(in_root readlink -f "$linked")"

in_root swift test --skip-build --scratch-path "$SCRATCH" --disable-xctest --filter "$FILTER" "$@"

# With a broker (scripts/test.sh passes its 3.10 node's URLs): the tests that need nothing but
# its URLs and test certificates, for what 0.15 changes on the wire: update-secret-ok read,
# TLS verified through OpenSSL's name checks. (Tests that run rabbitmqctl cannot: the root's
# CLI is 4.0's, with another Erlang cookie.)
if [[ -n "${RABBITMQ_URL:-}" && -n "${RABBITMQ_TLS_URL:-}" && -d "${RABBITMQ_TEST_TLS_DIR:-}" ]]; then
    bind "$RABBITMQ_TEST_TLS_DIR" "$ROOT$RABBITMQ_TEST_TLS_DIR" ro
    WIRE_FILTER='SecretUpdateTests/theBrokerTakesTheSecret|TLSTests/(verifiedByDNSName|anUnrelatedCA|aCertificateForAnotherName|theNameItCarries|failoverOverTLS)'
    chroot "$ROOT" env -i PATH="$TOOLCHAIN/bin:/usr/bin:/bin" HOME="$REPO/$SCRATCH/home" \
        TMPDIR="$REPO/$SCRATCH/tmp" LANG=C.UTF-8 RABBITMQ_URL="$RABBITMQ_URL" RABBITMQ_TLS_URL="$RABBITMQ_TLS_URL" \
        RABBITMQ_TEST_TLS_DIR="$RABBITMQ_TEST_TLS_DIR" \
        bash -c 'cd "$1" && shift && "$@"' in_root "$REPO" \
        swift test --skip-build --scratch-path "$SCRATCH" --disable-xctest --filter "$WIRE_FILTER" \
        ${C015_WIRE_XUNIT:+--xunit-output "$C015_WIRE_XUNIT"}
fi
