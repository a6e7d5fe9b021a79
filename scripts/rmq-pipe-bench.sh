#!/usr/bin/env bash
# Usage: scripts/rmq-pipe-bench.sh
#
# The rmq pipe against plain rabbitmq-c: the client CPU time (user + system, whole process,
# start-up and connection included) of
#   rmq publish --exchange "" --routing-key Q < lines
# and of a C loop doing the same (getline, amqp_basic_publish per line: `rabbitmq-bench
# publish-lines`, Sources/CRabbitMQBaseline/publish_lines.c), on the same broker and queue.
#   1. builds rmq and rabbitmq-bench in release mode (scratch path .build-rel)
#   2. starts a throwaway broker (scripts/broker.sh) unless RABBITMQ_URL is set, and stops
#      it on exit whatever happens
#   3. writes RMQ_PIPE_LINES (default 200000) lines of 16 bytes to a temporary file
#   4. one warm-up run each, then RMQ_PIPE_ROUNDS (default 3) rounds alternating which goes
#      first; prints the medians and rmq/C
# Exits 1 when rmq's median is above RMQ_PIPE_MAX_RATIO (default 1.2) times C's.
# RMQ_PIPE_RMQ=/path/to/rmq measures that binary instead of the one built (before/after).
# The queue is transient with x-max-length, so the broker never holds more than 10,000.
# Progress goes to stderr, the result to stdout. Needs /usr/bin/time (Debian: time; installed
# when missing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

LINES="${RMQ_PIPE_LINES:-200000}"
ROUNDS="${RMQ_PIPE_ROUNDS:-3}"
MAX_RATIO="${RMQ_PIPE_MAX_RATIO:-1.2}"
SCRATCH=(--scratch-path "${RMQ_PIPE_SCRATCH_PATH:-.build-rel}")
QUEUE="rmq-pipe-bench-$$"
WORK="$(mktemp -d)"
BIN=""
source scripts/throwaway-broker.sh

if [[ ! -x /usr/bin/time ]]; then
    # A fresh Debian has no GNU time; install it as install-deps.sh installs the rest.
    if [[ "$(id -u)" -eq 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >&2
    elif command -v sudo >/dev/null 2>&1; then
        sudo apt-get update -qq && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >&2
    fi
    [[ -x /usr/bin/time ]] || { echo "rmq-pipe-bench.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
fi

# Run by the EXIT trap (scripts/throwaway-broker.sh), before the broker stops.
throwaway_cleanup() {
    if [[ -n "$BIN" && -n "${RABBITMQ_URL:-}" ]]; then
        "$BIN/rabbitmq-bench" publish-lines --queue "$QUEUE" --delete-queue >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}

echo "==> build (release)" >&2
swift build "${SCRATCH[@]}" -c release --product rmq >&2
swift build "${SCRATCH[@]}" -c release --product rabbitmq-bench >&2
BIN_DIR="$(swift build "${SCRATCH[@]}" -c release --show-bin-path)"

throwaway_broker_start
BIN="$BIN_DIR"

# "message-00000001": 16 bytes and a newline.
awk -v n="$LINES" 'BEGIN { for (i = 1; i <= n; i++) printf "message-%08d\n", i }' >"$WORK/lines"
"$BIN/rabbitmq-bench" publish-lines --queue "$QUEUE" --reset-queue 10000 >&2

# Runs one implementation on the lines and prints its CPU seconds (user + system).
measure() {
    local which=$1
    local -a command
    if [[ $which == rmq ]]; then
        command=("${RMQ_PIPE_RMQ:-$BIN/rmq}" publish --exchange "" --routing-key "$QUEUE")
    else
        command=("$BIN/rabbitmq-bench" publish-lines --queue "$QUEUE")
    fi
    # Bounded: a run that hangs (a broker that blocks publishers) is stopped after 5 minutes.
    if ! /usr/bin/time -f "%U %S" -o "$WORK/time" timeout 300 "${command[@]}" <"$WORK/lines" >/dev/null 2>"$WORK/err"; then
        echo "rmq-pipe-bench.sh: $which failed:" >&2
        cat "$WORK/err" >&2
        return 1
    fi
    # Total, user, system.
    awk '{ printf "%.2f %.2f %.2f\n", $1 + $2, $1, $2 }' "$WORK/time"
}

# The median of the first column.
median() { cut -d' ' -f1 | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "==> $LINES lines, $ROUNDS rounds ($(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
measure c >/dev/null
measure rmq >/dev/null
: >"$WORK/c.txt"
: >"$WORK/rmq.txt"
for ((round = 1; round <= ROUNDS; round++)); do
    order=(c rmq)
    ((round % 2 == 0)) && order=(rmq c)
    for which in "${order[@]}"; do
        result="$(measure "$which")"
        read -r cpu user system <<<"$result"
        echo "$cpu" >>"$WORK/$which.txt"
        echo "round $round $which: $cpu s CPU (user $user, system $system)" >&2
    done
done

C_CPU="$(median <"$WORK/c.txt")"
RMQ_CPU="$(median <"$WORK/rmq.txt")"
awk -v c="$C_CPU" -v r="$RMQ_CPU" -v n="$LINES" -v max="$MAX_RATIO" 'BEGIN {
    ratio = c > 0 ? r / c : 0
    printf "rmq publish: %.2f s CPU (%.2f us/line)\n", r, r * 1e6 / n
    printf "rabbitmq-c:  %.2f s CPU (%.2f us/line)\n", c, c * 1e6 / n
    printf "rmq/C: %.2fx (limit %.2fx)\n", ratio, max
    exit (c > 0 && ratio <= max) ? 0 : 1
}'
