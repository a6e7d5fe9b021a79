#!/usr/bin/env bash
# Usage: scripts/run.sh [extra args for `rmq demo`, e.g. --rpc-calls 10000]
#
# The README's main job, end to end: install dependencies, build, start a
# throwaway broker unless RABBITMQ_URL points at one already (and stop it on
# exit), then run every messaging pattern against it in release mode:
#   swift run -c release rmq demo
# The program finds the broker through RABBITMQ_URL in its environment.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

product=rmq
args=(demo "$@")

scripts/install-deps.sh
# Build before starting the broker: a release build takes minutes, and a
# compile error should not cost a broker start/stop.
swift build -c release --product "$product"

if [[ -z "${RABBITMQ_URL:-}" ]]; then
    # Stop the broker however we leave: normal end, failure or Ctrl-C.
    trap 'scripts/broker.sh stop >/dev/null 2>&1 || true' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    scripts/broker.sh start
    eval "$(scripts/broker.sh env)"
fi
export RABBITMQ_URL
# Never echo a password: show the URL with its password masked.
echo "run.sh: $product ${args[*]} against $(sed -E 's#(//[^:/@]*):[^@/]*@#\1:***@#g' <<<"$RABBITMQ_URL")"

# Not exec: the EXIT trap must still run to stop the broker.
swift run -c release --skip-build "$product" "${args[@]}"
