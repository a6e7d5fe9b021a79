#!/usr/bin/env bash
# Usage: scripts/cluster.sh COMMAND [N] [ARGS...]
#
# A throwaway three-node RabbitMQ cluster on this machine, for fault tests
# (node failover with quorum queues). Each node is a scripts/broker.sh node
# with its own name, ports and base dir; this script only adds clustering.
#
#   start          start the three nodes, cluster 2 and 3 with 1, check that
#                  all three are running members (does nothing if they are)
#   stop           stop all nodes and delete the cluster dir (safe to repeat)
#   status         `cluster_status` from a running node, plus each node's
#                  process state; exit 0 iff all three run as members
#   env            print `export` lines for callers:
#                  eval "$(scripts/cluster.sh env)"
#   stop-node N    graceful `rabbitmqctl stop` of node N (data kept)
#   kill-node N    SIGKILL node N's Erlang VM, as a crash (data kept)
#   start-node N   start node N again from its data dir; wait until it is
#                  booted and a running cluster member again
#   pause-node N   SIGSTOP node N's VM (the others only declare it down
#                  after net_ticktime, 45-75 s; see below)
#   resume-node N  SIGCONT node N's VM
#   pid N          print the OS pid of node N's Erlang VM
#   ctl N ARGS...  `rabbitmqctl -n NODE_N ARGS...` (bounded to 60 s)
#
# N is 1, 2 or 3. Nodes are rmqc1@localhost..rmqc3@localhost with AMQP on
# 127.0.0.1:5801..5803, TLS on 6801..6803 (certificates of one test CA for all
# three, made by broker.sh in CLUSTER_DIR/tls) and Erlang distribution on
# 25801..25803.
#
# Environment (all optional):
#   CLUSTER_BASE_PORT  AMQP port of node 1; node N uses BASE+N-1 and
#                      distribution port BASE+N-1+20000     (default 5801)
#   CLUSTER_PREFIX     node N is PREFIX<N>@localhost         (default rmqc)
#   CLUSTER_DIR        node N lives in CLUSTER_DIR/PREFIX<N>
#                      (default /tmp/rmqswift-cluster)
#   (To run a second cluster beside this one, change all three.)
#   CLUSTER_PARTITION_HANDLING  ignore (RabbitMQ's default), autoheal or
#                      pause_minority; read when a node starts
#   RMQ_VERSION        4: RabbitMQ 4.0 nodes in the root of
#                      scripts/rabbitmq4-root.sh (see scripts/broker.sh), with
#                      defaults of their own so that they can run beside a 3.10
#                      cluster: rmq4c1..3@localhost, AMQP 5811..5813, dir
#                      /tmp/rmqswift-cluster4 inside the root
#
# Pausing a node for longer than net_ticktime (60 s: the others declare it
# down after 45-75 s) leaves a partitioned cluster once it resumes; `start`
# heals that by restarting the rabbit app of the nodes cut off from the
# majority.
set -euo pipefail

RMQ_VERSION=${RMQ_VERSION:-3}
if [[ "$RMQ_VERSION" == 4 ]]; then
    CLUSTER_BASE_PORT=${CLUSTER_BASE_PORT:-5811}
    CLUSTER_PREFIX=${CLUSTER_PREFIX:-rmq4c}
    CLUSTER_DIR=${CLUSTER_DIR:-/tmp/rmqswift-cluster4}
    RMQ_ROOT=${RMQ_ROOT:-/var/cache/rmqswift/trixie}
    RMQ_EPMD_PORT=${RMQ_EPMD_PORT:-4380}
    export RMQ_VERSION RMQ_ROOT RMQ_EPMD_PORT
    # CLUSTER_DIR as the nodes see it; HOST_DIR as this script does.
    HOST_DIR="$RMQ_ROOT$CLUSTER_DIR"
else
    CLUSTER_BASE_PORT=${CLUSTER_BASE_PORT:-5801}
    CLUSTER_PREFIX=${CLUSTER_PREFIX:-rmqc}
    CLUSTER_DIR=${CLUSTER_DIR:-/tmp/rmqswift-cluster}
    HOST_DIR="$CLUSTER_DIR"
fi
# A node paused for longer than net_ticktime is declared down by the others;
# when it resumes, the cluster is partitioned (mnesia does not merge again).
# RabbitMQ's default, ignore, leaves it so, which is what a test wants to
# observe; `start` heals it. The alternatives do not suit a test cluster:
# pause_minority does not even trigger here (the resumed node reconnects to
# its peers before it checks for a majority, tried with 3.10.8), and
# autoheal restarts the partition with fewer client connections, which in a
# test may well be the healthy majority.
CLUSTER_PARTITION_HANDLING=${CLUSTER_PARTITION_HANDLING:-ignore}
NODE_COUNT=3

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
BROKER="$SCRIPT_DIR/broker.sh"

# Every rabbitmqctl on this machine uses the same 11 distribution ports for
# its own short-lived Erlang node (35672-35682) unless told otherwise. Other
# engineers' scripts use those too, and we run several CLIs at once (one
# `wait` per booting node): give ours a private range so that we neither
# starve nor get starved. broker.sh runs the CLI via runuser, which keeps the
# environment.
export RABBITMQ_CTL_DIST_PORT_MIN=${RABBITMQ_CTL_DIST_PORT_MIN:-$((CLUSTER_BASE_PORT + 30000))}
export RABBITMQ_CTL_DIST_PORT_MAX=${RABBITMQ_CTL_DIST_PORT_MAX:-$((RABBITMQ_CTL_DIST_PORT_MIN + 19))}

die() { echo "cluster.sh: $*" >&2; exit 1; }

# as_root: run a command as root.
source "$(dirname "${BASH_SOURCE[0]}")/as-root.sh"
say() { echo "cluster.sh: $*"; }

node_name() { echo "$CLUSTER_PREFIX$1@localhost"; }
node_port() { echo $((CLUSTER_BASE_PORT + $1 - 1)); }
node_base() { echo "$CLUSTER_DIR/$CLUSTER_PREFIX$1"; }
all_nodes() { seq 1 "$NODE_COUNT"; }

check_n() {
    if ! [[ "${1:-}" =~ ^[1-9][0-9]*$ ]] || (($1 > NODE_COUNT)); then
        die "expected a node number 1..$NODE_COUNT, got '${1:-}'"
    fi
}

# broker.sh for node N: one code path for starting, killing, pausing and
# talking to a node, whether it is alone or in a cluster.
broker() {
    local n=$1
    shift
    RMQ_NODE="$(node_name "$n")" \
        RMQ_PORT="$(node_port "$n")" \
        RMQ_DIST_PORT=$(($(node_port "$n") + 20000)) \
        RMQ_TLS_PORT=$(($(node_port "$n") + 1000)) \
        RMQ_TLS_DIR="$CLUSTER_DIR/tls" \
        RMQ_BASE="$(node_base "$n")" \
        RMQ_EXTRA_CONF="cluster_partition_handling = $CLUSTER_PARTITION_HANDLING" \
        "$BROKER" "$@"
}

ctl() { broker "$1" ctl "${@:2}"; }

# The OS pid of node N's VM, or failure if it is not running.
vm_pid() { broker "$1" pid 2>/dev/null; }

# running | paused | down, from the process alone (no CLI call, so it is
# instant and never hangs on a frozen node).
proc_state() {
    local pid state
    pid="$(vm_pid "$1")" || { echo down; return; }
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || { echo down; return; }
    case "$state" in
        T | t) echo paused ;;
        *) echo running ;;
    esac
}

# `cluster_status` of node N as one line of JSON, or failure.
cluster_json() { CTL_TIMEOUT=${CTL_TIMEOUT:-30} ctl "$1" -q cluster_status --formatter json 2>/dev/null; }

# The node names in the JSON list KEY ("running_nodes", "disk_nodes"), one a
# line. A plain grep keeps jq/python out of the script's dependencies; the
# CLI prints these lists as flat arrays of strings.
json_nodes() {
    local list
    list="$(grep -o "\"$2\":\[[^]]*\]" <<<"$1")" || return 0
    grep -o '"[^"]*@[^"]*"' <<<"${list#*:}" | tr -d '"' || true
}

# True if the JSON's list KEY holds every node of the cluster.
has_all() {
    local names n
    names="$(json_nodes "$1" "$2")"
    for n in $(all_nodes); do
        grep -qxF "$(node_name "$n")" <<<"$names" || return 1
    done
}

# The number of the first node, other than $1, whose VM runs unpaused (a
# CLI call against a frozen VM would hang until its timeout).
peer_of() {
    local n
    for n in $(all_nodes); do
        [[ "$n" != "$1" && "$(proc_state "$n")" == running ]] && { echo "$n"; return 0; }
    done
    return 1
}

# True if, as node 1 sees it, all nodes run as cluster members.
fully_up() {
    local json n
    for n in $(all_nodes); do
        [[ "$(proc_state "$n")" == running ]] || return 1
    done
    json="$(cluster_json 1)" || return 1
    has_all "$json" running_nodes
}

# Make node N a member of SEED's cluster unless it already is. The documented
# way: stop the rabbit app (the VM keeps running), join, start the app again.
ensure_member() {
    local n=$1 seed=$2 json out
    json="$(cluster_json "$n")" || die "$(node_name "$n") does not answer"
    if json_nodes "$json" disk_nodes | grep -qxF "$(node_name "$seed")"; then
        return 0
    fi
    say "joining $(node_name "$n") to $(node_name "$seed")"
    ctl "$n" -q stop_app >/dev/null
    if ! out="$(ctl "$n" -q join_cluster "$(node_name "$seed")" 2>&1)"; then
        # SEED still lists node N from an earlier life (its data dir was
        # wiped since): the cluster refuses it as "inconsistent" until the
        # old incarnation is forgotten.
        if grep -q inconsistent_cluster <<<"$out"; then
            say "forgetting the old $(node_name "$n") on $(node_name "$seed") first"
            ctl "$seed" -q forget_cluster_node "$(node_name "$n")" >/dev/null
            ctl "$n" -q join_cluster "$(node_name "$seed")" >/dev/null
        else
            echo "$out" >&2
            ctl "$n" -q start_app >/dev/null 2>&1 || true
            die "$(node_name "$n") could not join $(node_name "$seed")"
        fi
    fi
    # start_app returns once the rabbit app has booted, listeners included; its TLS
    # listener, started again, must also complete a handshake (as at broker.sh start).
    CTL_TIMEOUT=120 ctl "$n" -q start_app >/dev/null
    broker "$n" tls-ready >/dev/null || die "$(node_name "$n") joined, but its TLS listener does not answer"
}

# Wait (bounded) until node N shows up as running in a peer's view (or, for
# the whole cluster, all nodes do). Mnesia membership is settled when the
# node's boot finishes, so this normally succeeds on the first try.
wait_members() {
    local want=$1 deadline=$((SECONDS + 60)) json seen peer
    while ((SECONDS < deadline)); do
        # For one node, ask a peer (its view is what clients failing over
        # rely on); for the whole cluster, node 1, which the others joined.
        peer=1
        if [[ "$want" != all ]]; then
            peer="$(peer_of "$want")" || peer=$want
        fi
        if json="$(cluster_json "$peer")"; then
            if [[ "$want" == all ]]; then
                has_all "$json" running_nodes && return 0
            else
                seen="$(json_nodes "$json" running_nodes)"
                grep -qxF "$(node_name "$want")" <<<"$seen" && return 0
            fi
        fi
        sleep 1
    done
    return 1
}

# Each node's own list of running nodes, space-separated, in VIEWS[N]
# (empty if the node does not answer).
declare -a VIEWS=()
read_views() {
    local n json
    VIEWS=()
    for n in $(all_nodes); do
        VIEWS[n]=""
        [[ "$(proc_state "$n")" == running ]] || continue
        json="$(cluster_json "$n")" || continue
        VIEWS[n]="$(json_nodes "$json" running_nodes | paste -sd ' ')"
    done
}

# After a partition each side lists only itself as running. Keep the largest
# side (on a tie the one with node 1) and restart the rabbit app of every
# node outside it: on start_app it syncs from the running peers and so
# rejoins them, as RabbitMQ's docs prescribe for recovering from a partition.
heal_partitions() {
    local n best=1 size best_size=-1
    read_views
    for n in $(all_nodes); do
        size=$(wc -w <<<"${VIEWS[n]}")
        if ((size > best_size)); then
            best=$n
            best_size=$size
        fi
    done
    for n in $(all_nodes); do
        [[ -n "${VIEWS[n]}" ]] || continue
        if ! grep -qwF "$(node_name "$n")" <<<"${VIEWS[best]}"; then
            say "$(node_name "$n") is partitioned from the others; restarting its rabbit app"
            ctl "$n" -q stop_app >/dev/null
            CTL_TIMEOUT=120 ctl "$n" -q start_app >/dev/null
            broker "$n" tls-ready >/dev/null || die "$(node_name "$n") restarted, but its TLS listener does not answer"
        fi
    done
}

cmd_start() {
    local t0=$SECONDS n rc=0
    local -a pids=()
    # Wake VMs a test left frozen (as broker.sh start does for its node):
    # otherwise the status checks below wait for their CLI timeouts.
    for n in $(all_nodes); do
        broker "$n" resume >/dev/null 2>&1 || true
    done
    if fully_up; then
        say "already running: $(all_nodes | while read -r n; do node_name "$n"; done | paste -sd ' ')"
        return 0
    fi
    if [[ "$RMQ_VERSION" == 4 ]]; then
        # Once, before the nodes start in parallel (each broker.sh would do it too).
        "$SCRIPT_DIR/rabbitmq4-root.sh" "$RMQ_ROOT"
    fi
    mkdir -p "$HOST_DIR"
    # Start all nodes at once, each through broker.sh (which returns at once
    # for a node that already runs). At once, not one by one: a node that
    # was a cluster member waits during boot for the peers it last saw, so a
    # sequential restart of a stopped cluster could stall for minutes. It is
    # also faster on a fresh start.
    for n in $(all_nodes); do
        RMQ_START_TIMEOUT=${RMQ_START_TIMEOUT:-120} broker "$n" start \
            >"$HOST_DIR/start-$n.log" 2>&1 &
        pids+=($!)
    done
    for n in $(all_nodes); do
        wait "${pids[n - 1]}" || rc=1
        sed "s/^/  /" "$HOST_DIR/start-$n.log"
        rm -f "$HOST_DIR/start-$n.log"
    done
    ((rc == 0)) || die "a node did not start (see above); \`$SELF stop\` wipes the cluster"
    # One at a time: concurrent joins to the same node race on the schema.
    for n in $(all_nodes); do
        ((n == 1)) || ensure_member "$n" 1
    done
    if ! fully_up; then
        heal_partitions
    fi
    if ! wait_members all; then
        cmd_status >&2 || true
        die "the nodes run but do not form one cluster; \`$SELF stop\` then \`start\` resets it"
    fi
    say "cluster up: amqp://127.0.0.1:$(node_port 1)..$(node_port "$NODE_COUNT") ($((SECONDS - t0))s)"
}

cmd_stop() {
    local n rc=0 f
    local -a pids=()
    # In parallel: a graceful stop takes a few seconds per node, and the
    # data is deleted anyway, so shutdown order does not matter.
    for n in $(all_nodes); do
        broker "$n" stop >/dev/null 2>&1 &
        pids+=($!)
    done
    for n in $(all_nodes); do
        wait "${pids[n - 1]}" || { rc=1; echo "cluster.sh: could not stop $(node_name "$n")" >&2; }
    done
    if [[ -d "$HOST_DIR" ]]; then
        # Delete only what looks like ours (node dirs, start logs, the test certificates).
        for f in "$HOST_DIR"/* "$HOST_DIR"/.[!.]*; do
            [[ -e "$f" ]] || continue
            case "$(basename "$f")" in
                "$CLUSTER_PREFIX"[0-9]* | start-*.log | tls | tls.lock | tls.new) ;;
                *) die "$HOST_DIR holds $f, which is not ours; not deleting it" ;;
            esac
        done
        # The certificates belong to user rabbitmq: a non-root run deletes them as root.
        as_root rm -rf "$HOST_DIR"
    fi
    ((rc == 0)) || exit 1
    say "stopped"
}

cmd_status() {
    local n peer json state up=1
    for n in $(all_nodes); do
        state="$(proc_state "$n")"
        [[ "$state" == running ]] || up=0
        printf '%-20s amqp 127.0.0.1:%s  pid %-8s %s\n' "$(node_name "$n")" \
            "$(node_port "$n")" "$(vm_pid "$n" || echo -)" "$state"
    done
    # Ask the first node that can answer (never a paused one: it would hang).
    for n in $(all_nodes); do
        [[ "$(proc_state "$n")" == running ]] || continue
        if json="$(cluster_json "$n")"; then
            peer=$n
            break
        fi
    done
    [[ -n "${peer:-}" ]] || { echo "no node answers"; return 1; }
    echo
    ctl "$peer" cluster_status || true
    has_all "$json" running_nodes || up=0
    ((up == 1))
}

cmd_start_node() {
    local n=$1 t0=$SECONDS seed
    # The other nodes run with the cluster's certificates: keep them (RMQ_TLS_KEEP).
    RMQ_TLS_KEEP=1 RMQ_START_TIMEOUT=${RMQ_START_TIMEOUT:-120} broker "$n" start
    # Normally the node rejoins by itself from its data dir; a node with a
    # fresh dir (never clustered, or wiped) has to be joined.
    if seed="$(peer_of "$n")"; then
        ensure_member "$n" "$seed"
        wait_members "$n" || die "$(node_name "$n") runs but is not a running member of the cluster"
    else
        say "no other node runs; $(node_name "$n") is up on its own"
    fi
    say "$(node_name "$n") up and in the cluster ($((SECONDS - t0))s)"
}

cmd_stop_node() {
    local n=$1 pid
    if ! pid="$(vm_pid "$n")"; then
        say "$(node_name "$n") is not running"
        return 0
    fi
    # A frozen VM can't process `stop`.
    broker "$n" resume >/dev/null 2>&1 || true
    # `stop PIDFILE` returns once the VM process has exited. Graceful: the
    # node leaves the cluster's running set cleanly, clients get a
    # connection.close (320 CONNECTION_FORCED), data stays.
    if ! CTL_TIMEOUT=120 ctl "$n" -q stop "$(node_base "$n")/rabbitmq.pid" >/dev/null; then
        echo "cluster.sh: graceful stop of $(node_name "$n") failed; killing it" >&2
        broker "$n" kill >/dev/null
    fi
    say "$(node_name "$n") stopped (pid $pid); data kept"
}

cmd_env() {
    local n urls="" names="" tls_urls=""
    for n in $(all_nodes); do
        urls+="${urls:+,}amqp://guest:guest@127.0.0.1:$(node_port "$n")/"
        tls_urls+="${tls_urls:+,}amqps://guest:guest@127.0.0.1:$(($(node_port "$n") + 1000))/?cacertfile=$HOST_DIR/tls/ca.pem"
        names+="${names:+,}$(node_name "$n")"
    done
    cat <<EOF
export RABBITMQ_CLUSTER_URLS='$urls'
export RABBITMQ_CLUSTER_TLS_URLS='$tls_urls'
export RABBITMQ_CLUSTER_NODES='$names'
export RABBITMQ_CLUSTER_CTL='$SELF'
EOF
    if [[ "$RMQ_VERSION" == 4 ]]; then
        # The tests run RABBITMQ_CLUSTER_CTL with these, so that it finds these nodes.
        echo "export RMQ_VERSION=4 RMQ_ROOT='$RMQ_ROOT' RMQ_EPMD_PORT='$RMQ_EPMD_PORT'"
        echo "export CLUSTER_BASE_PORT='$CLUSTER_BASE_PORT' CLUSTER_PREFIX='$CLUSTER_PREFIX' CLUSTER_DIR='$CLUSTER_DIR'"
    fi
}

usage() { sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//'; }

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        start | stop | status | env)
            [[ $# -eq 0 ]] || die "$cmd takes no arguments"
            "cmd_$cmd"
            ;;
        start-node | stop-node | kill-node | pause-node | resume-node | pid)
            [[ $# -eq 1 ]] || die "usage: $cmd N"
            check_n "$1"
            case "$cmd" in
                start-node) cmd_start_node "$1" ;;
                stop-node) cmd_stop_node "$1" ;;
                kill-node) broker "$1" kill ;;
                pause-node) broker "$1" pause ;;
                resume-node) broker "$1" resume ;;
                pid) broker "$1" pid ;;
            esac
            ;;
        ctl)
            [[ $# -ge 1 ]] || die "usage: ctl N ARGS..."
            check_n "$1"
            ctl "$@"
            ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
