#!/usr/bin/env bash
# Usage: scripts/bench.sh [--smoke] [more rabbitmq-bench run options, e.g. --scenario consume --rounds 7 --json]
#
# The benchmark: the Swift layer against raw rabbitmq-c (Sources/CRabbitMQBaseline) on the
# same broker, C and Swift alternating, and prints the table (Markdown) with Swift/C ratios.
#   1. builds rabbitmq-bench in release mode (--smoke: the debug build scripts/test.sh
#      already made, with the same flags, so CI compiles nothing twice)
#   2. starts a throwaway broker (scripts/broker.sh) unless RABBITMQ_URL is set, and stops
#      it on exit whatever happens
#   3. runs the default set (about 6 minutes on 2 cores: C and four Swift callers per
#      round, see rabbitmq-bench --caller) or, with --smoke, tiny counts
#      and one round: it checks that every scenario works and measures nothing
# Progress goes to stderr, the table (or --json) to stdout.
# BENCH_SCRATCH_PATH overrides SwiftPM's build directory (default .build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SMOKE=0
for arg in "$@"; do
    [[ "$arg" == --smoke ]] && SMOKE=1
done
SCRATCH=(--scratch-path "${BENCH_SCRATCH_PATH:-.build}")
source scripts/throwaway-broker.sh

if [[ $SMOKE -eq 1 ]]; then
    echo "==> build (debug, as scripts/test.sh does)" >&2
    swift build "${SCRATCH[@]}" --build-tests -Xswiftc -warnings-as-errors >&2
    BIN="$(swift build "${SCRATCH[@]}" --show-bin-path)"
else
    echo "==> build (release)" >&2
    swift build "${SCRATCH[@]}" -c release --product rabbitmq-bench >&2
    BIN="$(swift build "${SCRATCH[@]}" -c release --show-bin-path)"
fi

throwaway_broker_start

echo "==> rabbitmq-bench run $* ($(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
"$BIN/rabbitmq-bench" run "$@"
