#!/usr/bin/env bash
# Usage: scripts/broker.sh start|stop|restart|status|env|pid|pause|resume|kill|tls-ready|ctl ARGS...
#
# A throwaway single-node RabbitMQ broker for tests and demos, started as a
# plain process (no systemd, no Docker) from Debian's rabbitmq-server package.
#
#   start    start the node unless it already answers; wait until it is booted
#            and its TLS listener completes a handshake (see tls-ready).
#            An existing base dir is reused (durable queues and persistent
#            messages survive `kill` + `start`); `restart` starts from scratch.
#   stop     stop the node (graceful, then SIGKILL) and delete its base dir
#   restart  stop, then start
#   status   `rabbitmqctl status` against the node (exit 0 iff it answers)
#   env      print `export` lines for callers: eval "$(scripts/broker.sh env)"
#   pid      print the OS pid of the node's Erlang VM (beam.smp), which owns
#            the AMQP listening socket; SIGSTOP/SIGCONT it to freeze the broker
#   pause    SIGSTOP that pid (needs root or the rabbitmq user)
#   resume   SIGCONT that pid
#   kill     SIGKILL that pid (a crash: no clean shutdown), keeping the base
#            dir so that `start` brings the node back with its data
#   tls-ready  wait until the TLS listener completes a handshake verified by the
#            test CA (openssl s_client, each try bounded to 15 s), at most
#            RMQ_TLS_READY_TIMEOUT seconds (default 60) before the last try; say
#            how long it took, or fail
#   ctl ...  run `rabbitmqctl -n NODE ...` (bounded to 60 s)
#
# Environment (all optional):
#   RMQ_NODE       Erlang node name            (default rmqswift@localhost)
#   RMQ_PORT       AMQP port on 127.0.0.1      (default 5682)
#   RMQ_DIST_PORT  Erlang distribution port    (default 25682)
#   RMQ_BASE       data/log/config directory   (default /tmp/rmqswift-broker)
#                  It must be reachable by user `rabbitmq` (so not under /root).
#   RMQ_START_TIMEOUT  seconds `start` waits for the boot (default 60)
#   RMQ_EXTRA_CONF     extra rabbitmq.conf lines (e.g. from scripts/cluster.sh)
#   RMQ_NOFILE     the node's soft open-files limit (default: what runuser's
#                  PAM session gives, 1024 here: about 830 AMQP connections).
#                  At most the hard limit. scripts/idle-bench.sh sets it.
#   RMQ_TLS_PORT   TLS (amqps) port on 127.0.0.1 (default RMQ_PORT + 1000;
#                  0: no TLS listener). Certificates are made with openssl at
#                  the first start, in RMQ_TLS_DIR (default RMQ_BASE/tls, as the
#                  node sees it): a CA (ca.pem), the server's (subjectAltName
#                  DNS:localhost, IP:127.0.0.1), a client's (client.pem,
#                  client.key, CN rmqswift-client) and an unrelated CA
#                  (other-ca.pem). Never committed: they live and die with the
#                  node's base dir. The listener asks for a client certificate
#                  (verify_peer) but does not require one, and EXTERNAL logs in
#                  by the certificate's common name (rabbitmq_auth_mechanism_ssl).
#                  They are made again when incomplete or expiring within a day,
#                  unless RMQ_TLS_KEEP is set (a cluster node joining running ones).
#   RMQ_VERSION    3 (default): this machine's RabbitMQ (3.10 on Debian 12);
#                  4: RabbitMQ 4.0 from Debian 13, run in the root that
#                  scripts/rabbitmq4-root.sh makes (RMQ_ROOT, default
#                  /var/cache/rmqswift/trixie), with RabbitMQ 4.3's default
#                  denials of deprecated features; defaults then
#                  rmqswift4@localhost, 5722, 25722, /tmp/rmqswift-broker4
#                  (a path inside the root) and an Erlang port mapper of its
#                  own on RMQ_EPMD_PORT (default 4380), so that it never
#                  meets the 3.10 nodes'. `env` passes these on to callers.
#
# Defaults differ from the stock 5672/rabbit@host so that this node never
# collides with a system broker that apt may have started.
set -euo pipefail

RMQ_VERSION=${RMQ_VERSION:-3}
case "$RMQ_VERSION" in
    3)
        ROOT=""
        RMQ_NODE=${RMQ_NODE:-rmqswift@localhost}
        RMQ_PORT=${RMQ_PORT:-5682}
        RMQ_DIST_PORT=${RMQ_DIST_PORT:-25682}
        RMQ_BASE=${RMQ_BASE:-/tmp/rmqswift-broker}
        ;;
    4)
        RMQ_ROOT=${RMQ_ROOT:-/var/cache/rmqswift/trixie}
        ROOT="$RMQ_ROOT"
        RMQ_NODE=${RMQ_NODE:-rmqswift4@localhost}
        RMQ_PORT=${RMQ_PORT:-5722}
        RMQ_DIST_PORT=${RMQ_DIST_PORT:-25722}
        RMQ_BASE=${RMQ_BASE:-/tmp/rmqswift-broker4}
        RMQ_EPMD_PORT=${RMQ_EPMD_PORT:-4380}
        if [[ "$RMQ_BASE" != /* || "$(id -u)" -ne 0 ]]; then
            echo "broker.sh: RMQ_VERSION=4 needs root (chroot) and an absolute RMQ_BASE" >&2
            exit 2
        fi
        ;;
    *)
        echo "broker.sh: RMQ_VERSION must be 3 or 4, not '$RMQ_VERSION'" >&2
        exit 2
        ;;
esac

RMQ_TLS_PORT=${RMQ_TLS_PORT:-$((RMQ_PORT + 1000))}
if [[ -n "${RMQ_NOFILE:-}" && ! "$RMQ_NOFILE" =~ ^[0-9]+$ ]]; then
    echo "broker.sh: RMQ_NOFILE must be a number, not '$RMQ_NOFILE'" >&2
    exit 2
fi
RMQ_TLS_DIR=${RMQ_TLS_DIR:-$RMQ_BASE/tls}

# RMQ_BASE as the node sees it (inside the root for RabbitMQ 4); BASE as this
# script sees it. The node's settings and rabbitmqctl arguments name RMQ_BASE
# and IN_PID_FILE, file operations here the others.
BASE="$ROOT$RMQ_BASE"
IN_PID_FILE="$RMQ_BASE/rabbitmq.pid"
PID_FILE="$BASE/rabbitmq.pid"
CONF_FILE="$BASE/rabbitmq.conf"
PLUGINS_FILE="$BASE/enabled_plugins"
ENV_CONF_FILE="$BASE/rabbitmq-env.conf"
LOG_DIR="$BASE/log"
MNESIA_DIR="$BASE/mnesia"
STARTUP_LOG="$LOG_DIR/startup.log"
TLS_DIR="$ROOT$RMQ_TLS_DIR"

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

# Debian's /usr/sbin/rabbitmq{-server,ctl} are wrappers that re-run the real
# scripts through `su rabbitmq -c "..."` after re-quoting the arguments with
# double quotes, so `$`, backticks and backslashes in arguments get expanded
# by /bin/sh. We call the real scripts ourselves, with argv intact, as the
# same user the wrapper would use. Upstream (non-Debian) installs have no
# /usr/lib/rabbitmq/bin, so fall back to whatever is on PATH.
RMQ_BIN_DIR=/usr/lib/rabbitmq/bin
if [[ -z "$ROOT" && ! -x "$RMQ_BIN_DIR/rabbitmqctl" ]]; then
    RMQ_BIN_DIR="$(dirname "$(command -v rabbitmqctl || echo /usr/sbin/rabbitmqctl)")"
fi

die() { echo "broker.sh: $*" >&2; exit 1; }

# Run a command as user rabbitmq.
# Why user rabbitmq: the node must use the same HOME, hence the same Erlang
# cookie (/var/lib/rabbitmq/.erlang.cookie), as every rabbitmqctl we run;
# otherwise the CLI is refused with "Authentication failed (rejected by the
# remote node)". runuser/sudo -H set HOME from passwd (runuser keeps the rest
# of the environment, sudo drops it: pass settings with env(1)). We also cd
# to / because the VM wants a cwd it can read, and /root is 0700.
as_rabbitmq() {
    if [[ -n "$ROOT" ]]; then
        # RabbitMQ 4: in the root, as its own rabbitmq user (HOME holds the cookie
        # the node and every rabbitmqctl share), with the root's own port mapper.
        (cd / && chroot --userspec=rabbitmq:rabbitmq "$ROOT" env HOME=/var/lib/rabbitmq \
            ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$RMQ_EPMD_PORT" sh -c 'cd / && exec "$@"' sh "$@")
        return
    fi
    if ! id -u rabbitmq >/dev/null 2>&1; then
        # No rabbitmq user (non-Debian install): run as ourselves.
        (cd / && "$@")
    elif [[ "$(id -un)" == rabbitmq ]]; then
        (cd / && "$@")
    elif [[ "$(id -u)" -eq 0 ]]; then
        (cd / && runuser -u rabbitmq -- "$@")
    elif command -v sudo >/dev/null 2>&1; then
        (cd / && sudo -H -u rabbitmq -- env ERL_EPMD_ADDRESS="$ERL_EPMD_ADDRESS" "$@")
    else
        die "must run as root or rabbitmq (or have sudo)"
    fi
}

# as_root: run a command as root.
source "$(dirname "${BASH_SOURCE[0]}")/as-root.sh"

# Environment read by rabbitmq-server's own scripts. RABBITMQ_* variables win
# over /etc/rabbitmq/rabbitmq-env.conf, and RABBITMQ_CONF_ENV_FILE points the
# scripts at an empty file so a machine-wide env file can't leak in at all.
NODE_ENV=(
    RABBITMQ_NODENAME="$RMQ_NODE"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$RMQ_PORT"
    RABBITMQ_DIST_PORT="$RMQ_DIST_PORT"
    RABBITMQ_MNESIA_BASE="$RMQ_BASE/mnesia"
    RABBITMQ_LOG_BASE="$RMQ_BASE/log"
    RABBITMQ_PID_FILE="$IN_PID_FILE"
    RABBITMQ_CONFIG_FILE="$RMQ_BASE/rabbitmq.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_BASE/enabled_plugins"
    RABBITMQ_CONF_ENV_FILE="$RMQ_BASE/rabbitmq-env.conf"
    # Without this the distribution listener binds every interface.
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    # The log's timestamps in UTC whatever the machine's zone: the tests read them.
    TZ=UTC
)

# Whichever Erlang VM runs first (often the CLI of `status`, not the node)
# spawns the epmd daemon; keep it on loopback too.
export ERL_EPMD_ADDRESS=127.0.0.1

# rabbitmqctl against our node, bounded (CTL_TIMEOUT seconds, default 60) so
# a frozen (SIGSTOPped) VM can't hang the caller forever.
# The CLI names itself rabbitmqcli-<random number>-<host> for Erlang distribution: two run at
# once (parallel tests) can draw the same name, and the second then fails before reaching the
# node ("Distribution failed ... nodistribution", exit 78). Another attempt draws another name.
ctl() {
    local attempt output status errors
    errors="$(mktemp)"
    for attempt in 1 2 3; do
        status=0
        output="$(as_rabbitmq timeout -k 5 "${CTL_TIMEOUT:-60}" "$RMQ_BIN_DIR/rabbitmqctl" -n "$RMQ_NODE" "$@" 2>"$errors")" \
            || status=$?
        if [[ $status -eq 78 && $attempt -lt 3 ]] && { grep -q "Distribution failed" "$errors" || [[ "$output" == *"Distribution failed"* ]]; }; then
            continue
        fi
        break
    done
    if [[ -n "$output" ]]; then printf '%s\n' "$output"; fi
    cat "$errors" >&2
    rm -f "$errors"
    return "$status"
}

# True if the process exists and is not a zombie. /proc works for any user,
# unlike kill -0 on a process owned by rabbitmq.
alive() {
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# True if pid is an Erlang VM started with our pid file. After `kill` (or a
# crash) the pid file is stale and its pid may since have been reused by an
# unrelated process, which we must never signal. The environment check needs
# read access to /proc/PID/environ (root or user rabbitmq); without it we
# settle for "it is a beam".
is_our_vm() {
    local comm environ
    comm="$(cat "/proc/$1/comm" 2>/dev/null)" || return 1
    [[ "$comm" == beam* ]] || return 1
    if [[ -r "/proc/$1/environ" ]]; then
        # Read it whole first: `tr | grep -q` could fail under pipefail
        # when grep exits early and tr gets SIGPIPE.
        environ="$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null)" || return 1
        grep -qxF "RABBITMQ_PID_FILE=$IN_PID_FILE" <<<"$environ"
    fi
}

# The VM pid from the pid file, if that process is alive and ours.
vm_pid() {
    local pid
    [[ -r "$PID_FILE" ]] || return 1
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [[ -n "$pid" ]] && alive "$pid" && is_our_vm "$pid" || return 1
    echo "$pid"
}

# Fallback for a VM without a pid file (a boot that timed out before the VM
# wrote it): the beam whose environment names our pid file. Only works with
# read access to /proc/PID/environ, i.e. as root or user rabbitmq.
scan_vm_pid() {
    local p
    for p in $(pgrep -x beam.smp 2>/dev/null || true); do
        if [[ -r "/proc/$p/environ" ]] && alive "$p" && is_our_vm "$p"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

is_running() {
    [[ -d "$BASE" ]] || return 1
    ctl -q status >/dev/null 2>&1
}

print_logs() {
    local f
    # startup.log (the CLI's view) matches the glob too.
    for f in "$LOG_DIR"/*.log; do
        [[ -s "$f" ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 40 "$f" >&2 || true
    done
}

write_config() {
    # New-style (sysctl) config. guest stays loopback-only, which is fine
    # because we only ever listen on 127.0.0.1.
    cat >"$CONF_FILE" <<EOF
listeners.tcp.default = 127.0.0.1:$RMQ_PORT
log.file.level = info
log.console = false
EOF
    if [[ "$RMQ_VERSION" == 4 ]]; then
        # What RabbitMQ 4.3 denies by default, denied here on 4.0.
        printf '%s\n' "deprecated_features.permit.transient_nonexcl_queues = false" \
            "deprecated_features.permit.global_qos = false" \
            "deprecated_features.permit.queue_master_locator = false" >>"$CONF_FILE"
    fi
    if [[ "$RMQ_TLS_PORT" != 0 ]]; then
        cat >>"$CONF_FILE" <<EOF
listeners.ssl.default = 127.0.0.1:$RMQ_TLS_PORT
ssl_options.cacertfile = $RMQ_TLS_DIR/ca.pem
ssl_options.certfile = $RMQ_TLS_DIR/server.pem
ssl_options.keyfile = $RMQ_TLS_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
EOF
    fi
    if [[ -n "${RMQ_EXTRA_CONF:-}" ]]; then
        printf '%s\n' "$RMQ_EXTRA_CONF" >>"$CONF_FILE"
    fi
    # Only the plugins we need: nothing from /etc/rabbitmq/enabled_plugins
    # (e.g. management) gets started, which makes boot noticeably faster.
    if [[ "$RMQ_TLS_PORT" != 0 ]]; then
        echo '[rabbitmq_auth_mechanism_ssl].' >"$PLUGINS_FILE"
    else
        echo '[].' >"$PLUGINS_FILE"
    fi
    # rabbitmq-server's scripts source this file before they start the VM: the
    # only place where a limit reaches the node (runuser resets it from PAM).
    if [[ -n "${RMQ_NOFILE:-}" ]]; then
        echo "ulimit -n $RMQ_NOFILE" >"$ENV_CONF_FILE"
    else
        : >"$ENV_CONF_FILE"
    fi
}

# The test certificates (see RMQ_TLS_PORT above), made once per directory and again when
# they are incomplete (an interrupted start) or expire within a day; in a directory of
# their own that is renamed into place, so a half-made set is never taken for a whole one.
# A lock, because a cluster's nodes share one directory.
make_certificates() {
    mkdir -p "$(dirname "$TLS_DIR")"
    (
        flock 9
        if [[ -e "$TLS_DIR/.complete" ]]; then
            # A node joining others that already run with these (RMQ_TLS_KEEP, from
            # cluster.sh start-node) keeps them whatever their age: new ones would not match.
            [[ -n "${RMQ_TLS_KEEP:-}" ]] && exit 0
            if openssl x509 -checkend 86400 -noout -in "$TLS_DIR/server.pem" >/dev/null 2>&1 \
                && openssl x509 -checkend 86400 -noout -in "$TLS_DIR/client.pem" >/dev/null 2>&1; then
                exit 0
            fi
        fi
        d="$TLS_DIR.new"
        rm -rf "$d"
        mkdir -p "$d"
        key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -x509 "${key[@]}" -keyout "$d/ca.key" -out "$d/ca.pem" -days 30 \
            -subj "/CN=rmqswift test CA" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -x509 "${key[@]}" -keyout "$d/other-ca.key" -out "$d/other-ca.pem" -days 30 \
            -subj "/CN=rmqswift unrelated CA" -addext "basicConstraints=critical,CA:TRUE" 2>/dev/null
        rm -f "$d/other-ca.key"
        for name in server client; do
            if [[ $name == server ]]; then
                cn=localhost ext="subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
            else
                cn=rmqswift-client ext="extendedKeyUsage=clientAuth"
            fi
            openssl req "${key[@]}" -keyout "$d/$name.key" -out "$d/$name.csr" -subj "/CN=$cn" 2>/dev/null
            openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
                -out "$d/$name.pem" -days 30 -extfile <(printf "$ext\n") 2>/dev/null
            rm -f "$d/$name.csr"
        done
        rm -f "$d/ca.key" "$d/ca.srl"
        # A throwaway test key: readable by whoever runs the tests (not only root).
        chmod 0644 "$d/client.key" || exit 1
        # set -e does not reach in here (the subshell is the left side of ||): check the set.
        for f in ca.pem other-ca.pem server.pem server.key client.pem client.key; do
            [[ -s "$d/$f" ]] || { echo "broker.sh: openssl did not make $f" >&2; exit 1; }
        done
        touch "$d/.complete" || exit 1
        # Owned by rabbitmq after the chown below: a non-root run deletes it as root.
        as_root rm -rf "$TLS_DIR" || exit 1
        mv "$d" "$TLS_DIR" || exit 1
    ) 9>"$TLS_DIR.lock" || die "could not make the TLS certificates in $TLS_DIR"
    if [[ -n "$ROOT" ]]; then
        chroot "$ROOT" chown -R rabbitmq:rabbitmq "$RMQ_TLS_DIR"
    elif id -u rabbitmq >/dev/null 2>&1; then
        as_root chown -R rabbitmq: "$TLS_DIR"
    fi
}

cmd_start() {
    local pid
    # A test may have left the VM SIGSTOPped; waking it is cheaper than the
    # ~15 s a status call takes to give up on a frozen node.
    if pid="$(vm_pid)"; then
        as_root kill -CONT "$pid" 2>/dev/null || true
    fi
    if is_running; then
        echo "broker.sh: $RMQ_NODE already running (pid $(vm_pid || echo '?'))"
        return 0
    fi
    # A VM that is alive but does not answer (hung, or still booting from an
    # earlier attempt) would keep the ports busy: get rid of it. The base dir
    # stays: after `kill` (or a crash) the node must come back with its
    # durable queues, persistent messages and, in a cluster, its membership.
    cmd_kill >/dev/null
    # The pid file of a dead VM would make `rabbitmqctl wait` below read the
    # old pid and give up at once ("process is not running").
    as_root rm -f "$PID_FILE"

    # Fail fast and clearly instead of after a full boot ending in eaddrinuse.
    local port
    for port in "$RMQ_PORT" "$RMQ_DIST_PORT" "$RMQ_TLS_PORT"; do
        [[ "$port" == 0 ]] && continue
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "127.0.0.1:$port is already in use (set RMQ_PORT / RMQ_DIST_PORT)"
        fi
    done

    if [[ -n "$ROOT" ]]; then
        "$(dirname "$SELF")/rabbitmq4-root.sh" "$ROOT"
    fi
    local t0=$SECONDS
    mkdir -p "$MNESIA_DIR" "$LOG_DIR"
    write_config
    if [[ "$RMQ_TLS_PORT" != 0 ]]; then make_certificates; fi
    # Written by us (possibly non-root) after the chown below hands the tree
    # to rabbitmq.
    : >"$STARTUP_LOG"
    chmod 666 "$STARTUP_LOG"
    if [[ -n "$ROOT" ]]; then
        chroot "$ROOT" chown -R rabbitmq:rabbitmq "$RMQ_BASE"
    elif id -u rabbitmq >/dev/null 2>&1; then
        as_root chown -R rabbitmq: "$BASE"
    fi

    # -detached: erl forks the VM into the background and returns at once;
    # the node writes its own pid (the beam.smp pid) to RABBITMQ_PID_FILE.
    if ! as_rabbitmq env "${NODE_ENV[@]}" "$RMQ_BIN_DIR/rabbitmq-server" -detached \
            >>"$STARTUP_LOG" 2>&1; then
        echo "broker.sh: rabbitmq-server failed to launch" >&2
        print_logs
        exit 1
    fi
    # `wait PIDFILE` blocks until the pid file exists and the rabbit app has
    # fully booted (listeners up), or gives up after the timeout.
    # The outer bound is longer so that wait's own timeout reports first.
    local timeout=${RMQ_START_TIMEOUT:-60}
    if ! CTL_TIMEOUT=$((timeout + 30)) ctl wait "$IN_PID_FILE" --timeout "$timeout" \
            >>"$STARTUP_LOG" 2>&1; then
        echo "broker.sh: $RMQ_NODE did not come up within ${timeout}s" >&2
        print_logs
        # Kill the half-booted VM but keep the base dir: its logs explain the
        # failure, and its data may be all a cluster node has. `stop` wipes it.
        cmd_kill >/dev/null 2>&1 || true
        exit 1
    fi
    local tls_note=""
    if [[ "$RMQ_TLS_PORT" != 0 ]]; then
        if ! tls_note=$(await_tls_handshake); then
            echo "broker.sh: $RMQ_NODE is up but its TLS listener on 127.0.0.1:$RMQ_TLS_PORT $tls_note" >&2
            print_logs
            cmd_kill >/dev/null 2>&1 || true
            exit 1
        fi
        tls_note=", TLS on $RMQ_TLS_PORT $tls_note"
    fi
    echo "broker.sh: $RMQ_NODE up on amqp://127.0.0.1:$RMQ_PORT (pid $(vm_pid), $((SECONDS - t0))s$tls_note)"
}

# `rabbitmqctl wait` returns once the node has booted, which says nothing of whether its TLS
# listener completes a handshake. Waits (bounded by RMQ_TLS_READY_TIMEOUT, 60 s) until a
# handshake verified against the test CA succeeds, and prints how long that took; a
# listener that never answers is a failed start, said here rather than by the first TLS
# test's connect timeout.
await_tls_handshake() {
    local limit=${RMQ_TLS_READY_TIMEOUT:-60} start=$SECONDS tries=0 out="" rc=0
    while :; do
        tries=$((tries + 1))
        rc=0
        out=$(timeout -k 5 15 openssl s_client -connect "127.0.0.1:$RMQ_TLS_PORT" -servername localhost \
            -CAfile "$TLS_DIR/ca.pem" -verify_return_error -brief </dev/null 2>&1) || rc=$?
        if [[ $rc -eq 0 ]]; then
            echo "answered a handshake after $((SECONDS - start))s ($tries tries)"
            return 0
        fi
        [[ $rc -eq 124 ]] && out="no answer in 15 s"
        if ((SECONDS - start >= limit)); then
            echo "completed no handshake in ${limit}s ($tries tries; the last: $(tail -n 2 <<<"$out" | tr '\n' ' '))"
            return 1
        fi
        sleep 1
    done
}

cmd_stop() {
    local pid=""
    pid="$(vm_pid || true)"
    if [[ -n "$pid" ]]; then
        # A paused VM can't process `stop`; wake it first.
        as_root kill -CONT "$pid" 2>/dev/null || true
        if ! ctl stop "$IN_PID_FILE" >/dev/null 2>&1; then
            echo "broker.sh: graceful stop failed, killing pid $pid" >&2
        fi
        if alive "$pid"; then
            as_root kill -9 "$pid" 2>/dev/null || true
            # Wait (bounded) for the kernel to release the ports.
            for _ in $(seq 50); do
                alive "$pid" || break
                sleep 0.1
            done
        fi
    fi
    # epmd outlives the node it was started for. Stop it only if no other
    # Erlang node is registered (epmd -kill refuses otherwise anyway).
    if [[ -n "$ROOT" ]]; then
        if ! as_rabbitmq epmd -names 2>/dev/null | grep -q '^name '; then
            as_rabbitmq epmd -kill >/dev/null 2>&1 || true
        fi
    elif command -v epmd >/dev/null 2>&1 \
            && ! epmd -names 2>/dev/null | grep -q '^name '; then
        epmd -kill >/dev/null 2>&1 || true
    fi
    # Refuse to rm -rf something that doesn't look like ours.
    if [[ -d "$BASE" ]]; then
        if [[ -e "$CONF_FILE" || -d "$MNESIA_DIR" || -z "$(ls -A "$BASE")" ]]; then
            as_root rm -rf "$BASE"
        else
            die "$BASE does not look like a broker dir; not deleting it"
        fi
    fi
    echo "broker.sh: $RMQ_NODE stopped"
}

# SIGKILL the VM, as a crash would: no clean shutdown, nothing deleted. The
# kernel closes its sockets at once, so clients see the connection reset and
# new connections are refused; epmd drops the registration by itself.
cmd_kill() {
    local pid
    if ! pid="$(vm_pid)" && ! pid="$(scan_vm_pid)"; then
        echo "broker.sh: $RMQ_NODE is not running"
        return 0
    fi
    as_root kill -9 "$pid" 2>/dev/null || true
    # Bounded wait until the process is gone, so its ports are free when we
    # return and an immediate `start` can bind them again.
    for _ in $(seq 100); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        die "pid $pid of $RMQ_NODE survived SIGKILL"
    fi
    echo "broker.sh: $RMQ_NODE killed (pid $pid); data kept in $BASE"
}

cmd_env() {
    cat <<EOF
export RABBITMQ_URL='amqp://guest:guest@127.0.0.1:$RMQ_PORT/'
export RABBITMQ_TEST_NODE='$RMQ_NODE'
export RABBITMQ_TEST_PIDFILE='$PID_FILE'
export RABBITMQ_TEST_CTL='$SELF'
EOF
    if [[ "$RMQ_TLS_PORT" != 0 ]]; then
        echo "export RABBITMQ_TLS_URL='amqps://guest:guest@127.0.0.1:$RMQ_TLS_PORT/?cacertfile=$TLS_DIR/ca.pem' RABBITMQ_TEST_TLS_DIR='$TLS_DIR'"
    fi
    if [[ "$RMQ_VERSION" == 4 ]]; then
        # The tests run RABBITMQ_TEST_CTL with these, so that it finds this node.
        echo "export RMQ_VERSION=4 RMQ_ROOT='$RMQ_ROOT' RMQ_EPMD_PORT='$RMQ_EPMD_PORT'"
        echo "export RMQ_NODE='$RMQ_NODE' RMQ_PORT='$RMQ_PORT' RMQ_DIST_PORT='$RMQ_DIST_PORT' RMQ_BASE='$RMQ_BASE'"
    fi
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        restart) cmd_stop; cmd_start ;;
        status) ctl status ;;
        env) cmd_env ;;
        pid) vm_pid || die "$RMQ_NODE is not running" ;;
        pause | resume)
            local pid sig=STOP
            [[ "$cmd" == resume ]] && sig=CONT
            pid="$(vm_pid)" || die "$RMQ_NODE is not running"
            as_root kill "-$sig" "$pid"
            ;;
        kill) cmd_kill ;;
        tls-ready)
            [[ "$RMQ_TLS_PORT" != 0 ]] || die "$RMQ_NODE has no TLS listener (RMQ_TLS_PORT=0)"
            local note
            note=$(await_tls_handshake) || die "the TLS listener on 127.0.0.1:$RMQ_TLS_PORT $note"
            echo "broker.sh: $RMQ_NODE: TLS on $RMQ_TLS_PORT $note"
            ;;
        ctl) ctl "$@" ;;
        -h | --help | help)
            sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//'
            ;;
        *)
            sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
            exit 2
            ;;
    esac
}

main "$@"
