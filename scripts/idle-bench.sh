#!/usr/bin/env bash
# Usage: scripts/idle-bench.sh [rabbitmq-bench idle options, e.g. --connections 500 --seconds 30 --json]
#
# What idle connections cost the process that holds them (issue 10, item 6): opens
# --connections (default 1,000) connections to one broker, leaves them idle (heartbeats
# only) and reports threads, resident memory per connection, wake-ups per second (context
# switches of all the process's threads) and CPU per second, then closes them.
#   1. builds rabbitmq-bench in release mode (scratch path .build-rel, or IDLE_SCRATCH_PATH)
#   2. starts a throwaway broker (scripts/broker.sh) unless RABBITMQ_URL is set, and stops
#      it on exit whatever happens. Its open-files limit is raised (RMQ_NOFILE, default
#      8192): with the 1,024 a runuser session gets, RabbitMQ takes about 830 connections.
#      A broker of your own (RABBITMQ_URL) needs the same (`rabbitmqctl status`: Sockets limit).
#   3. runs `rabbitmq-bench idle` (with the throwaway broker's pid, for its CPU too)
# Progress goes to stderr, the table (or --json) to stdout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCRATCH=(--scratch-path "${IDLE_SCRATCH_PATH:-.build-rel}")
source scripts/throwaway-broker.sh

echo "==> build (release)" >&2
swift build "${SCRATCH[@]}" -c release --product rabbitmq-bench >&2
BIN="$(swift build "${SCRATCH[@]}" -c release --show-bin-path)"

export RMQ_NOFILE="${RMQ_NOFILE:-8192}"
throwaway_broker_start
BROKER_PID=()
if [[ $THROWAWAY_BROKER_STARTED -eq 1 ]]; then BROKER_PID=(--broker-pid "$(scripts/broker.sh pid)"); fi

# Two descriptors per connection here (the socket and the I/O thread's eventfd).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "==> rabbitmq-bench idle $* ($(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
"$BIN/rabbitmq-bench" idle "${BROKER_PID[@]}" "$@"
