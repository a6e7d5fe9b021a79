# Sourced by the measuring scripts (bench.sh, idle-bench.sh, rmq-pipe-bench.sh), from the
# repository root: a broker for one run.
#   throwaway_broker_start  starts scripts/broker.sh's node unless RABBITMQ_URL names a
#                           broker already, and exports RABBITMQ_URL (and, for its node,
#                           the rest of `broker.sh env`: RABBITMQ_TLS_URL...). A node that
#                           already runs (scripts/test.sh's, a developer's) is used and left
#                           running; settings that apply at start (RMQ_NOFILE) then do not.
#   throwaway_broker_stop   stops that node if it was started here
# Sourcing it sets the EXIT trap that stops the node whatever happens, after the script's
# own `throwaway_cleanup` if it defines one, and exits 130 / 143 on SIGINT / SIGTERM.
# broker.sh's settings (RMQ_NOFILE, RMQ_PORT...) pass through the environment.
THROWAWAY_BROKER_STARTED=0

throwaway_finish() {
    local rc=$?
    # Whatever the cleanup does, the broker is stopped and the script's status kept.
    set +eu
    if declare -F throwaway_cleanup >/dev/null; then throwaway_cleanup || echo "$(basename "$0"): cleanup failed" >&2; fi
    throwaway_broker_stop
    exit $rc
}
trap throwaway_finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

throwaway_broker_start() {
    if [[ -z "${RABBITMQ_URL:-}" ]]; then
        if scripts/broker.sh pid >/dev/null 2>&1; then
            echo "==> using the running broker node (left running; RMQ_NOFILE and other start settings do not apply)" >&2
        else
            THROWAWAY_BROKER_STARTED=1
            echo "==> start broker" >&2
            scripts/broker.sh start >&2
        fi
        local settings
        settings="$(scripts/broker.sh env)" || { echo "$(basename "$0"): scripts/broker.sh env failed" >&2; return 1; }
        eval "$settings"
    else
        echo "==> using the broker at $RABBITMQ_URL" >&2
    fi
    export RABBITMQ_URL
}

throwaway_broker_stop() {
    if [[ $THROWAWAY_BROKER_STARTED -eq 1 ]]; then
        scripts/broker.sh stop >/dev/null 2>&1 || echo "$(basename "$0"): could not stop the broker" >&2
    fi
}
