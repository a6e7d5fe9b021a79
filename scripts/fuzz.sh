#!/usr/bin/env bash
# Usage: scripts/fuzz.sh [--seconds N | --runs N]      (default: --seconds 60)
#
# Fuzzes the C boundary with libFuzzer and AddressSanitizer: bytes from a broker through
# rabbitmq-c's frame, property and table decoders into our Swift conversion, and Swift
# field tables, properties and publishes through our encoders and back (the target is
# Sources/rabbitmq-fuzz; its paths are described in FuzzTarget.swift). Builds into
# .build-fuzz, starts from the committed seeds in Tests/FuzzCorpus (new inputs go to
# .build-fuzz/corpus, never into the repository), and fails on any crash, broken
# round trip, leak or sanitizer report; a failing input is saved under
# .build-fuzz/artifacts/ (replay: .build-fuzz/debug/rabbitmq-fuzz FILE). Prints the
# inputs executed. CI runs 60 s; by hand: scripts/fuzz.sh --runs 1000000.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

LIMIT=(-max_total_time=60)
case "${1:-}" in
    "") ;;
    --seconds) LIMIT=(-max_total_time="${2:?--seconds needs a number}") ;;
    --runs) LIMIT=(-runs="${2:?--runs needs a number}") ;;
    *) echo "usage: scripts/fuzz.sh [--seconds N | --runs N]" >&2; exit 2 ;;
esac

SCRATCH=.build-fuzz
mkdir -p "$SCRATCH/corpus" "$SCRATCH/artifacts"
echo "==> building rabbitmq-fuzz with -sanitize=fuzzer,address into $SCRATCH (log: $SCRATCH/build.log)"
# SwiftPM points main at the target's own entry point, which calls libFuzzer's driver:
# exported so the target finds it (see Sources/rabbitmq-fuzz/FuzzMain.swift).
swift build -c debug -Xswiftc -sanitize=fuzzer,address -Xswiftc -DRABBITMQ_FUZZING \
    -Xlinker --export-dynamic-symbol=LLVMFuzzerRunDriver --product rabbitmq-fuzz --scratch-path "$SCRATCH" \
    >"$SCRATCH/build.log" 2>&1 || { grep -E 'error' "$SCRATCH/build.log" >&2 || tail -20 "$SCRATCH/build.log" >&2; exit 1; }
BINARY="$SCRATCH/debug/rabbitmq-fuzz"

LOG="$SCRATCH/fuzz.log"
echo "==> fuzzing (${LIMIT[*]}); log: $LOG"
rc=0
# Inputs up to 16 KiB: a frame_max's worth of table, and publishes with bodies over the
# frame writer's copy limit. -timeout catches a hang (the loops are bounded).
"$BINARY" "${LIMIT[@]}" -max_len=16384 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="$SCRATCH/artifacts/" "$SCRATCH/corpus" Tests/FuzzCorpus >"$LOG" 2>&1 || rc=$?

executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOG" | tail -1)
speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$LOG" | tail -1)
coverage=$(grep -o 'cov: [0-9]*' "$LOG" | tail -1 || true)
if [[ $rc -ne 0 ]] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|Fatal error' "$LOG"; then
    grep -E -A30 'ERROR: |Fatal error|runtime error:' "$LOG" | head -60 >&2 || tail -40 "$LOG" >&2
    echo "FAIL  fuzz: exit $rc after ${executed:-?} inputs; the input is in $SCRATCH/artifacts/" >&2
    exit 1
fi
echo "PASS  fuzz: ${executed:-?} inputs executed, ${speed:-?} exec/s, ${coverage:-cov: ?}, 0 crashes, 0 sanitizer reports"
