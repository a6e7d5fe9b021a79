# Sourced by scripts/broker.sh and scripts/cluster.sh (which define `die`).
# Runs a command as root: the node dirs, certificates and VMs belong to user rabbitmq.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -- "$@"
    else
        die "need root (or sudo) for: $*"
    fi
}
