#!/usr/bin/env bash
# Usage: scripts/profile.sh SCENARIO [SIZE] [N1] [N2]      e.g. scripts/profile.sh publish 16
#
# Per-message costs of one rabbitmq-bench scenario, for the C baseline and the Swift layer,
# measured as the difference between a run of N1 and a run of N2 messages (default 10000
# and 30000, same warm-up), so start-up, connecting and warm-up cancel out:
#   1. valgrind --tool=callgrind: instructions (Ir) per message, the top functions by self
#      and inclusive Ir, calls per message to malloc, retain/release, locks, syscalls
#   2. an LD_PRELOAD malloc counter (scripts/profile/malloccount.c), without valgrind:
#      heap allocations per message at full speed
#   3. perf stat software counters (task-clock, context switches, syscalls) when perf works
#      (hardware counters are not available on this VM; callgrind stands in for them)
# Reports go to stdout; raw files to $PROFILE_DIR (default .build/profile). Starts a
# throwaway broker unless RABBITMQ_URL is set. The consume and rpc scenarios start child
# processes (queue filler, echo server): callgrind does not follow them, perf stat does.
# PROFILE_IMPLEMENTATIONS=swift (or c) profiles one side only. PROFILE_CALLER (default task)
# is where the Swift loop runs (rabbitmq-bench --caller): task, actor or connection; main
# parks the main thread in dispatch_main(), where valgrind 3.19 crashes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
SCENARIO="${1:?usage: scripts/profile.sh SCENARIO [SIZE] [N1] [N2]}"
SIZE="${2:-16}"
N1="${3:-10000}"
N2="${4:-30000}"
WARMUP=$(( N1 / 5 ))
OUT="${PROFILE_DIR:-.build/profile}"
SCRATCH=(--scratch-path "${BENCH_SCRATCH_PATH:-.build}")
STARTED_BROKER=0

finish() {
    local rc=$?
    if [[ $STARTED_BROKER -eq 1 ]]; then scripts/broker.sh stop >/dev/null 2>&1 || true; fi
    exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v valgrind >/dev/null || { echo "profile.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
mkdir -p "$OUT"
swift build "${SCRATCH[@]}" -c release --product rabbitmq-bench >&2
BIN="$(swift build "${SCRATCH[@]}" -c release --show-bin-path)/rabbitmq-bench"
# valgrind 3.19 (Debian 12) gives up on the DWARF 5 that Swift 6 emits; the symbol table
# is enough for function-level profiles.
cp "$BIN" "$OUT/rabbitmq-bench"
strip --strip-debug "$OUT/rabbitmq-bench"
cc -O2 -shared -fPIC -o "$OUT/malloccount.so" scripts/profile/malloccount.c

if [[ -z "${RABBITMQ_URL:-}" ]]; then
    STARTED_BROKER=1
    scripts/broker.sh start >&2
    eval "$(scripts/broker.sh env)"
fi
export RABBITMQ_URL

run() { # run IMPLEMENTATION MESSAGES [wrapper...]
    local impl="$1" n="$2"
    shift 2
    "$@" "$OUT/rabbitmq-bench" run --scenario "$SCENARIO" --size "$SIZE" --messages "$n" --warm-up "$WARMUP" \
        --implementation "$impl" --caller "${PROFILE_CALLER:-task}" --rounds 1 --max-seconds 900 >/dev/null
}

for impl in ${PROFILE_IMPLEMENTATIONS:-c swift}; do
    tag="$SCENARIO.$SIZE.$impl"
    echo "===== $SCENARIO $SIZE B, $impl: callgrind ($N1 and $N2 messages)"
    for n in "$N1" "$N2"; do
        run "$impl" "$n" valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$tag.$n" 2>"$OUT/callgrind.$tag.$n.log"
    done
    python3 scripts/profile/callgrind_marginal.py top "$OUT/callgrind.$tag.$N1" "$N1" "$OUT/callgrind.$tag.$N2" "$N2" 30

    echo
    echo "===== $SCENARIO $SIZE B, $impl: heap allocations (LD_PRELOAD counter, full speed)"
    for n in "$N1" "$N2"; do
        MALLOCCOUNT_OUT="$OUT/malloccount.$tag.$n" LD_PRELOAD="$OUT/malloccount.so" run "$impl" "$n" env 2>/dev/null
    done
    python3 - "$OUT/malloccount.$tag.$N1" "$N1" "$OUT/malloccount.$tag.$N2" "$N2" <<'PY'
import re, sys
def read(path):
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", open(path).read())}
a, b, d = read(sys.argv[1]), read(sys.argv[3]), int(sys.argv[4]) - int(sys.argv[2])
print("  " + ", ".join(f"{k} {(b[k] - a[k]) / d:.4f}/message" for k in ("allocations", "reallocations", "frees")))
PY

    if perf stat -e task-clock true >/dev/null 2>&1; then
        echo
        echo "===== $SCENARIO $SIZE B, $impl: perf stat (software counters; children included)"
        for n in "$N1" "$N2"; do
            run "$impl" "$n" perf stat -x, -o "$OUT/perfstat.$tag.$n" \
                -e task-clock,context-switches,raw_syscalls:sys_enter 2>/dev/null \
                || run "$impl" "$n" perf stat -x, -o "$OUT/perfstat.$tag.$n" -e task-clock,context-switches
        done
        python3 - "$OUT/perfstat.$tag.$N1" "$N1" "$OUT/perfstat.$tag.$N2" "$N2" <<'PY'
import csv, sys
def read(path):
    return {row[2]: float(row[0]) for row in csv.reader(open(path)) if len(row) > 3 and row[0][:1].isdigit()}
a, b, d = read(sys.argv[1]), read(sys.argv[3]), int(sys.argv[4]) - int(sys.argv[2])
for key, scale, unit in (("task-clock", 1000, "µs"), ("context-switches", 1, ""), ("raw_syscalls:sys_enter", 1, "")):
    if key in a and key in b:
        print(f"  {key:24s} {scale * (b[key] - a[key]) / d:9.3f} {unit}/message")
PY
    fi
    echo
done
