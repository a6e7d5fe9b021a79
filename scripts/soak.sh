#!/usr/bin/env bash
# Usage: scripts/soak.sh [--messages N] [--minutes M] [--cluster] [--debug] [more rabbitmq-bench soak options]
#
# The soak: publishes with confirms and consumes with manual acks through periodic faults,
# and keeps its own account of every message id (confirmed, consumed, duplicated, and at the
# end what the broker still holds). Lost = confirmed, never consumed, not in the queue; it
# must be 0. Prints a line every minute (confirmed, consumed, duplicates, recoveries, RSS,
# threads, descriptors) and a summary; exits non-zero if anything was lost.
#
#   --messages N   stop after N confirmed messages (default 1,000,000)
#   --minutes M    stop after M minutes whatever was published (default 30); the publisher
#                  is paced to spread N over M (--rate R to choose, --rate 0 for flat out)
#   --cluster      run on a three-node cluster (scripts/cluster.sh; quorum queue) and also
#                  kill and restart nodes; without it, a broker of its own
#   --debug        use the debug build (scripts/test.sh's short soak reuses its build)
#
# Faults, one every 20 s (--fault-every S), in turn: close_all_connections,
# stop_app + start_app, kill -9 + start (a node kill with --cluster).
#
# The single broker is the soak's own (node rmqswift-soak, port 5692, data in
# /tmp/rmqswift-soak), so a soak never disturbs scripts/broker.sh's broker; it is stopped
# on exit. With --cluster, a running cluster (RABBITMQ_CLUSTER_URLS set) is used as is,
# else one is started and stopped on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER=0
DEBUG=0
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --cluster) CLUSTER=1 ;;
        --debug) DEBUG=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        *) ARGS+=("$arg") ;;
    esac
done

export RMQ_NODE=rmqswift-soak@localhost RMQ_PORT=5692 RMQ_DIST_PORT=25692 RMQ_BASE=/tmp/rmqswift-soak
STARTED_BROKER=0
STARTED_CLUSTER=0

finish() {
    local rc=$?
    if [[ $STARTED_BROKER -eq 1 ]]; then
        scripts/broker.sh stop >/dev/null 2>&1 || echo "soak.sh: could not stop the broker" >&2
    fi
    if [[ $STARTED_CLUSTER -eq 1 ]]; then
        scripts/cluster.sh stop >/dev/null 2>&1 || echo "soak.sh: could not stop the cluster" >&2
    fi
    exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/install-deps.sh >&2
if [[ $DEBUG -eq 1 ]]; then
    echo "==> build (debug)" >&2
    swift build --build-tests -Xswiftc -warnings-as-errors >&2
    BIN="$(swift build --show-bin-path)"
else
    echo "==> build (release)" >&2
    swift build -c release --product rabbitmq-bench >&2
    BIN="$(swift build -c release --show-bin-path)"
fi

if [[ $CLUSTER -eq 1 ]]; then
    if [[ -z "${RABBITMQ_CLUSTER_URLS:-}" ]]; then
        STARTED_CLUSTER=1
        echo "==> start three-node cluster" >&2
        scripts/cluster.sh start >&2
        eval "$(scripts/cluster.sh env)"
    fi
    export RABBITMQ_CLUSTER_URLS
    CTL=(--cluster-ctl "$(pwd)/scripts/cluster.sh")
else
    STARTED_BROKER=1
    echo "==> start the soak's broker ($RMQ_NODE on 127.0.0.1:$RMQ_PORT)" >&2
    # From scratch: a queue left by an interrupted soak would count as held messages.
    scripts/broker.sh stop >/dev/null 2>&1 || true
    scripts/broker.sh start >&2
    eval "$(scripts/broker.sh env)"
    export RABBITMQ_URL
    CTL=(--broker-ctl "$(pwd)/scripts/broker.sh")
fi

echo "==> rabbitmq-bench soak ${ARGS[*]:-} ($(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
"$BIN/rabbitmq-bench" soak "${CTL[@]}" ${ARGS[@]+"${ARGS[@]}"}
