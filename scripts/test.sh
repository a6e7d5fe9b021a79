#!/usr/bin/env bash
# Usage: scripts/test.sh [extra `swift test` args for the main run, e.g. --filter FrameTests]
#
# The one command that runs every test:
#   1. scripts/install-deps.sh
#   2. swift build --build-tests -Xswiftc -warnings-as-errors (once)
#   2b. the DocC documentation of RabbitMQ and RabbitMQPatterns
#      (swift package generate-documentation, with swift-docc-plugin), warnings as
#      errors: a broken symbol link, an undocumented parameter or any other DocC
#      warning fails the step (archives in .build/plugins/Swift-DocC/outputs/, log
#      .build/documentation.log)
#   3. a throwaway broker (scripts/broker.sh), unless RABBITMQ_URL is already
#      set; it is stopped on exit, whatever happens
#   4. swift test --skip BrokerWideTests       (unit + integration tests)
#   4b. the same tests against a RabbitMQ 4.0 node that denies what 4.3 denies
#      by default (RMQ_VERSION=4 scripts/broker.sh: Debian 13's rabbitmq-server in
#      a root made once and cached; skipped, and said so, when no Debian mirror
#      can be reached to make it)
#   5. the broker-free tests and the core integration tests again, built with
#      ThreadSanitizer (.build-tsan); any report fails the step
#   5b. the build (warnings as errors) and the broker-free tests against rabbitmq-c
#      0.15, in the same Debian 13 root (scripts/test-rabbitmq-c-015.sh, .build-c015;
#      skipped, and said so, like 4b)
#   5c. scripts/fuzz.sh --seconds 60: the C boundary under libFuzzer and
#      AddressSanitizer (.build-fuzz); any crash, broken round trip or report
#      fails the step
#   6. swift test --filter "BrokerWideTests|FaultTests" (tests that change
#      broker-wide state: memory alarms, SIGSTOP, kill -9 and restart of the
#      broker, a node killed in a three-node cluster that scripts/cluster.sh
#      starts for them, over TCP and TLS; run alone, serially)
#   6b. the same against a RabbitMQ 4.0 node and a three-node 4.0 cluster
#      (skipped, and said so, as 4b is)
#   7. the benchmark's smoke run, and a 2-minute soak (scripts/soak.sh: some
#      200,000 messages through periodic faults, 0 lost)
# Prints a summary ending in "tests: N passed, N failed, N skipped" and exits
# non-zero if any step failed. Logs and xUnit files: .build/test-results/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Tests that freeze, alarm, kill or restart brokers: run alone, serially, after the rest.
BROKER_WIDE="BrokerWideTests|FaultTests"
RESULTS_DIR=.build/test-results
SUMMARY=()
FAILED=0
STARTED_BROKER=0
STARTED_CLUSTER=0
STARTED_BROKER4=0
STARTED_CLUSTER4=0
RAN_TESTS=0
ST_XML=()  # the xUnit files written by Swift Testing (see run_tests)
NOTES=()   # lines for the summary: what each broker start said (its TLS listener's handshake)
# How long one rabbitmqctl the tests run may take (broker.sh's own default is 60 s). Each is
# an Erlang VM booting while the suite loads both cores; a run of the RabbitMQ 4.0 suite on
# a machine that other builds also loaded saw 11 and 13 of them miss 60 s.
export CTL_TIMEOUT="${CTL_TIMEOUT:-180}"

# A broker start (broker.sh start, or broker4 start), its output shown as it comes and its
# last line kept for the summary: how long the node took and when its TLS listener first
# completed a handshake, or why the start failed. CI's page keeps only the summary.
noted_start() {
    local out line rc=0
    out=$(mktemp)
    "$@" start 2>&1 | tee "$out" || rc=${PIPESTATUS[0]}
    line=$(grep 'broker.sh: ' "$out" | tail -n 1 || true)
    rm -f "$out"
    [[ -n "$line" ]] && NOTES+=("$line")
    return $rc
}

# Run one step, record its outcome, and keep going: a failing unit test must
# not hide the result of the broker-wide tests.
step() {
    local name="$1" t0=$SECONDS rc=0
    shift
    echo "==> $name"
    "$@" || rc=$?
    if [[ $rc -eq 0 ]]; then
        SUMMARY+=("PASS  $name ($((SECONDS - t0))s)")
    else
        SUMMARY+=("FAIL  $name (exit $rc, $((SECONDS - t0))s)")
        FAILED=1
    fi
    return $rc
}

# Like step, for a step that needs the Debian 13 root: its function returns 3 when no Debian
# mirror can be reached to make (or complete) the root and 4 when not run as root, which
# are SKIPs, said so in the summary, not failures.
skippable_step() {
    local name="$1" t0=$SECONDS rc=0
    shift
    echo "==> $name"
    "$@" || rc=$?
    case $rc in
        0) SUMMARY+=("PASS  $name ($((SECONDS - t0))s)") ;;
        3) SUMMARY+=("SKIP  $name: no Debian mirror reachable to make or complete its root") ;;
        4) SUMMARY+=("SKIP  $name: needs root (chroot, mount)") ;;
        *)
            SUMMARY+=("FAIL  $name (exit $rc, $((SECONDS - t0))s)")
            FAILED=1
            ;;
    esac
}

# Count test results over both frameworks. XCTest on Linux writes xUnit only
# in --parallel mode, so its per-test lines in our logs are the source;
# Swift Testing's come from its xUnit files.
tally() {
    python3 - "$RESULTS_DIR" ${ST_XML[@]+"${ST_XML[@]}"} <<'EOF'
import glob, os, re, sys
import xml.etree.ElementTree as ET
d, xmls = sys.argv[1], sys.argv[2:]
n = {"passed": 0, "failed": 0, "skipped": 0}
for log in glob.glob(f"{d}/*.log"):
    with open(log, errors="replace") as f:
        for line in f:
            m = re.match(r"Test Case '[^']*' (passed|failed|skipped) \(", line)
            if m:
                n[m.group(1)] += 1
for x in xmls:
    if not os.path.exists(x):
        continue
    try:
        cases = ET.parse(x).iter("testcase")
    except ET.ParseError:
        continue
    for tc in cases:
        if tc.find("failure") is not None or tc.find("error") is not None:
            n["failed"] += 1
        elif tc.find("skipped") is not None:
            n["skipped"] += 1
        else:
            n["passed"] += 1
print(f"{n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped")
EOF
}

finish() {
    local rc=$?
    # Always stop a broker we started, so no Erlang VM outlives the run.
    if [[ $STARTED_BROKER -eq 1 ]]; then
        scripts/broker.sh stop >/dev/null 2>&1 || echo "test.sh: could not stop the broker" >&2
    fi
    if [[ $STARTED_BROKER4 -eq 1 ]]; then
        stop_broker4 >/dev/null 2>&1 || echo "test.sh: could not stop the RabbitMQ 4 broker" >&2
    fi
    if [[ $STARTED_CLUSTER -eq 1 ]]; then
        scripts/cluster.sh stop >/dev/null 2>&1 || echo "test.sh: could not stop the cluster" >&2
    fi
    if [[ $STARTED_CLUSTER4 -eq 1 ]]; then
        cluster4 stop >/dev/null 2>&1 || echo "test.sh: could not stop the RabbitMQ 4 cluster" >&2
    fi
    if [[ $FAILED -eq 1 && $rc -eq 0 ]]; then rc=1; fi
    echo
    echo "==> test.sh summary"
    if [[ ${#SUMMARY[@]} -gt 0 ]]; then printf '  %s\n' "${SUMMARY[@]}"; fi
    if [[ ${#NOTES[@]} -gt 0 ]]; then printf '  note: %s\n' "${NOTES[@]}"; fi
    if [[ $rc -ne 0 && $RAN_TESTS -eq 1 ]]; then
        python3 scripts/test-failures.py "$RESULTS_DIR" ${ST_XML[@]+"${ST_XML[@]}"} || true
    fi
    if [[ $rc -eq 0 ]]; then echo "  result: OK"; else echo "  result: FAILED (exit $rc)"; fi
    # Last line, in the plain "N passed, N failed" form tools look for.
    if [[ $RAN_TESTS -eq 1 ]]; then echo "tests: $(tally || echo '0 passed, 0 failed')"; fi
    exit $rc
}
trap finish EXIT
# Make Ctrl-C / CI cancellation go through the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM

# Steps 1-2 are prerequisites: nothing sensible runs without them.
step "install dependencies" scripts/install-deps.sh || exit 1
step "build (tests, warnings as errors)" swift build --build-tests -Xswiftc -warnings-as-errors || exit 1

# The documentation, after the build (it reuses the resolved packages and builds the symbol
# graphs in .build, offline). docc's --warnings-as-errors makes its own warnings fail; the
# log is searched as well, so that any other warning of the run fails the step too, except
# SwiftPM's note about files a dependency leaves undeclared (swift-distributed-tracing's
# CMakeLists.txt), which the build step prints as well and this package cannot change.
documentation() {
    # Not under $RESULTS_DIR, which is emptied before the tests run.
    local log=.build/documentation.log rc=0
    # Bounded: with no network interface at all, not even loopback, the plugin was seen to
    # wait for ever for a docc that had finished (SwiftPM 6.3.1, swift-docc-plugin 1.5.0).
    timeout -k 10 900 swift package --disable-sandbox generate-documentation \
        --target RabbitMQ --target RabbitMQPatterns --warnings-as-errors 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    local warnings
    warnings="$(grep -E '(^|: )warning:' "$log" \
        | grep -vE "^warning: '[^']+': found [0-9]+ file\(s\) which are unhandled" || true)"
    if [[ -n $warnings ]]; then
        echo "test.sh: the documentation build warned; see $log" >&2
        return 1
    fi
    return $rc
}
step "documentation (DocC, warnings as errors)" documentation || true

if [[ -z "${RABBITMQ_URL:-}" ]]; then
    STARTED_BROKER=1
    step "start broker" noted_start scripts/broker.sh || exit 1
    eval "$(scripts/broker.sh env)"
else
    echo "==> using the broker at $RABBITMQ_URL (tests that control the broker need RABBITMQ_TEST_CTL)"
fi
export RABBITMQ_URL

# List first, per framework, so that each run enables only the frameworks
# that have matching tests: a filter matching nothing makes a framework
# report "0 tests", which reads as "ran no test".
if ! XCT_LIST="$(swift test list --skip-build --disable-swift-testing)" \
    || ! ST_LIST="$(swift test list --skip-build --disable-xctest)"; then
    SUMMARY+=("FAIL  swift test list")
    exit 1
fi
count() { # count LIST wide|other
    local flag=-E
    [[ $2 == other ]] && flag=-vE
    grep "$flag" -- "$BROKER_WIDE" <<<"$1" | grep -c . || true
}
xct_other=$(count "$XCT_LIST" other) xct_wide=$(count "$XCT_LIST" wide)
st_other=$(count "$ST_LIST" other) st_wide=$(count "$ST_LIST" wide)
echo "==> tests: $((xct_other + st_other)) regular, $((xct_wide + st_wide)) broker-wide" \
    "(XCTest $xct_other+$xct_wide, Swift Testing $st_other+$st_wide)"

rm -rf "$RESULTS_DIR"
mkdir -p "$RESULTS_DIR"

# run_tests SLUG N_XCTEST N_SWIFT_TESTING swift-test-args...
run_tests() {
    local slug="$1" nx="$2" ns="$3" fw=()
    shift 3
    if [[ $nx -eq 0 ]]; then fw+=(--disable-xctest); fi
    if [[ $ns -eq 0 ]]; then fw+=(--disable-swift-testing); fi
    if [[ $ns -gt 0 ]]; then
        # Swift Testing writes the given path, or NAME-swift-testing.xml when
        # XCTest runs too (XCTest then owns NAME.xml, with --parallel only).
        fw+=(--xunit-output "$RESULTS_DIR/$slug.xml")
        if [[ $nx -gt 0 ]]; then ST_XML+=("$RESULTS_DIR/$slug-swift-testing.xml")
        else ST_XML+=("$RESULTS_DIR/$slug.xml"); fi
    fi
    RAN_TESTS=1
    # tee for the tally; stdbuf so that a test's own print()s are not lost in
    # a pipe buffer if the test process crashes.
    stdbuf -oL -eL swift test --skip-build "${fw[@]}" "$@" 2>&1 | tee "$RESULTS_DIR/$slug.log"
}

if [[ $# -gt 0 ]]; then
    # The caller's own filters decide what runs; enable both frameworks.
    step "swift test $* (without $BROKER_WIDE)" run_tests main 1 1 --skip "$BROKER_WIDE" "$@" || true
elif [[ $((xct_other + st_other)) -gt 0 ]]; then
    step "swift test (unit + integration)" run_tests main "$xct_other" "$st_other" --skip "$BROKER_WIDE" || true
fi
# RabbitMQ 4: the regular suite again against a 4.0 node with 4.3's denials. Its node's
# settings live in a subshell only (never in this shell, whose own broker and EXIT trap
# must keep meaning the 3.10 node), with broker.sh's defaults for a 4.0 node whatever
# RMQ_* the caller set for the 3.10 one.
broker4() { env -u RMQ_NODE -u RMQ_PORT -u RMQ_DIST_PORT -u RMQ_BASE -u RMQ_EPMD_PORT RMQ_VERSION=4 scripts/broker.sh "$@"; }
stop_broker4() { broker4 stop && STARTED_BROKER4=0; }
rabbitmq4_tests() {
    local rc=0
    # chroot and mount: root only (status 4: skipped, said so in the summary).
    [[ "$(id -u)" -eq 0 ]] || return 4
    scripts/rabbitmq4-root.sh || return $?
    STARTED_BROKER4=1
    noted_start broker4 || return 1
    (
        eval "$(broker4 env)"
        export RABBITMQ_URL RABBITMQ_TEST_CTL RABBITMQ_TEST_NODE RABBITMQ_TEST_PIDFILE
        run_tests rabbitmq4 "$xct_other" "$st_other" --skip "$BROKER_WIDE"
    ) || rc=$?
    # What run_tests recorded in the subshell, for the tally.
    RAN_TESTS=1
    if [[ $st_other -gt 0 && $xct_other -gt 0 ]]; then ST_XML+=("$RESULTS_DIR/rabbitmq4-swift-testing.xml")
    elif [[ $st_other -gt 0 ]]; then ST_XML+=("$RESULTS_DIR/rabbitmq4.xml"); fi
    stop_broker4 >/dev/null 2>&1 || true
    return $rc
}
if [[ $# -eq 0 && $STARTED_BROKER -eq 1 && $((xct_other + st_other)) -gt 0 ]]; then
    skippable_step "swift test against RabbitMQ 4.0 with 4.3's denials (unit + integration)" rabbitmq4_tests
fi
# ThreadSanitizer: the broker-free tests and the core integration suites, in a build of
# their own. A report fails the step even when every test passed.
tsan_tests() {
    swift build --build-tests --scratch-path .build-tsan --sanitize=thread || return 1
    RAN_TESTS=1
    local rc=0
    TSAN_OPTIONS="halt_on_error=0 ${TSAN_OPTIONS:-}" stdbuf -oL -eL swift test --skip-build \
        --scratch-path .build-tsan --sanitize=thread --disable-xctest \
        --filter '^(RabbitMQTests|CoreIntegrationTests)\.' --skip "$BROKER_WIDE" \
        --xunit-output "$RESULTS_DIR/tsan.xml" 2>&1 | tee "$RESULTS_DIR/tsan.log" || rc=$?
    ST_XML+=("$RESULTS_DIR/tsan.xml")
    if grep -q "WARNING: ThreadSanitizer" "$RESULTS_DIR/tsan.log"; then
        echo "test.sh: ThreadSanitizer reported $(grep -c 'WARNING: ThreadSanitizer' "$RESULTS_DIR/tsan.log") problem(s); see $RESULTS_DIR/tsan.log" >&2
        return 1
    fi
    return $rc
}
if [[ $# -eq 0 ]]; then
    step "ThreadSanitizer (broker-free + core integration tests)" tsan_tests || true
    step "fuzz the C boundary, 60 s (scripts/fuzz.sh --seconds 60)" scripts/fuzz.sh --seconds 60 || true
fi
# rabbitmq-c 0.15: the package built (warnings as errors) and its broker-free tests run in the
# Debian 13 root, against its librabbitmq-dev (the rabbitmq-c/ header layout), glibc and
# OpenSSL, with this machine's toolchain, in .build-c015 (scripts/test-rabbitmq-c-015.sh).
rabbitmq_c_015_tests() {
    local rc=0
    RAN_TESTS=1
    ST_XML+=("$RESULTS_DIR/rabbitmq-c-015.xml" "$RESULTS_DIR/rabbitmq-c-015-wire.xml")
    # The script's own status (3 and 4 mean skipped), not tee's. With the 3.10 broker's URLs
    # it also runs the tests that need only those against it (update-secret, TLS checks).
    C015_WIRE_XUNIT="$PWD/$RESULTS_DIR/rabbitmq-c-015-wire.xml" stdbuf -oL -eL scripts/test-rabbitmq-c-015.sh --xunit-output "$RESULTS_DIR/rabbitmq-c-015.xml" 2>&1 \
        | tee "$RESULTS_DIR/rabbitmq-c-015.log" || rc=${PIPESTATUS[0]}
    return $rc
}
if [[ $# -eq 0 ]]; then
    skippable_step "rabbitmq-c 0.15 in the Debian 13 root (build, broker-free tests, update-secret and TLS against the broker)" \
        rabbitmq_c_015_tests
fi
if [[ $((xct_wide + st_wide)) -gt 0 && -z "${RABBITMQ_CLUSTER_URLS:-}" ]]; then
    # The failover tests need a three-node cluster on this machine.
    STARTED_CLUSTER=1
    step "start three-node cluster" scripts/cluster.sh start || true
    eval "$(scripts/cluster.sh env)"
    export RABBITMQ_CLUSTER_URLS RABBITMQ_CLUSTER_CTL
fi
if [[ $((xct_wide + st_wide)) -gt 0 ]]; then
    # --no-parallel: these tests freeze or alarm the one shared broker, so
    # they must not overlap each other either.
    step "swift test ($BROKER_WIDE)" run_tests broker-wide "$xct_wide" "$st_wide" \
        --no-parallel --filter "$BROKER_WIDE" || true
fi
# RabbitMQ 4: the broker-wide and fault tests again, against a 4.0 node and a three-node 4.0
# cluster (the 3.10 cluster is stopped first: two idle clusters cost the tests CPU).
cluster4() {
    env -u CLUSTER_BASE_PORT -u CLUSTER_PREFIX -u CLUSTER_DIR -u RMQ_EPMD_PORT RMQ_VERSION=4 scripts/cluster.sh "$@"
}
rabbitmq4_wide_tests() {
    local rc=0
    [[ "$(id -u)" -eq 0 ]] || return 4
    scripts/rabbitmq4-root.sh || return $?
    if [[ $STARTED_CLUSTER -eq 1 ]]; then
        scripts/cluster.sh stop >/dev/null 2>&1 || true
        STARTED_CLUSTER=0
    fi
    STARTED_BROKER4=1
    noted_start broker4 || return 1
    STARTED_CLUSTER4=1
    cluster4 start || return 1
    (
        eval "$(broker4 env)"
        eval "$(cluster4 env)"
        run_tests rabbitmq4-broker-wide "$xct_wide" "$st_wide" --no-parallel --filter "$BROKER_WIDE"
    ) || rc=$?
    RAN_TESTS=1
    if [[ $st_wide -gt 0 && $xct_wide -gt 0 ]]; then ST_XML+=("$RESULTS_DIR/rabbitmq4-broker-wide-swift-testing.xml")
    elif [[ $st_wide -gt 0 ]]; then ST_XML+=("$RESULTS_DIR/rabbitmq4-broker-wide.xml"); fi
    cluster4 stop >/dev/null 2>&1 && STARTED_CLUSTER4=0
    stop_broker4 >/dev/null 2>&1 || true
    return $rc
}
if [[ $# -eq 0 && $STARTED_BROKER -eq 1 && $((xct_wide + st_wide)) -gt 0 ]]; then
    skippable_step "swift test ($BROKER_WIDE) against RabbitMQ 4.0 and a 4.0 cluster" rabbitmq4_wide_tests
fi
# The benchmark keeps building and working: every scenario with tiny counts, against the
# test broker, reusing this debug build; it measures nothing and asserts no timing.
step "benchmark smoke (scripts/bench.sh --smoke)" scripts/bench.sh --smoke || true
if [[ $# -eq 0 ]]; then
    # Its own broker (another node and port), so it runs after everything else.
    step "soak, 2 minutes (scripts/soak.sh --debug --minutes 2 --messages 200000)" \
        scripts/soak.sh --debug --minutes 2 --messages 200000 || true
fi
if [[ $((xct_other + st_other + xct_wide + st_wide)) -eq 0 ]]; then
    SUMMARY+=("FAIL  no tests found")
    FAILED=1
fi
