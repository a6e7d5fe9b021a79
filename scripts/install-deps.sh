#!/usr/bin/env bash
# Usage: scripts/install-deps.sh
#
# Installs what building and testing this package needs on Debian 12, and
# nothing when it is all there already (safe to run before every build):
#   librabbitmq-dev  the C client library the Swift code links against
#   pkg-config       how SwiftPM finds that library's flags
#   rabbitmq-server  the broker scripts/broker.sh starts for the tests
#   pika (Python)    an independent AMQP client the tests use as a peer
#   pydantic (Python, 2 or later) the envelope model Python services validate with
set -euo pipefail

# Root needs no sudo; a developer account does (and sudo drops the
# environment, hence `env` in front of apt-get below).
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps.sh: run as root or install sudo" >&2; exit 1; }
    SUDO=(sudo)
fi

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

# `apt-get update` is slow and needs the network: only once, only if we
# actually have something to install.
APT_UPDATED=false
apt_install() {
    if [[ "$APT_UPDATED" == false ]]; then
        "${SUDO[@]}" apt-get update -qq
        APT_UPDATED=true
    fi
    # Installing rabbitmq-server may print that policy-rc.d denied starting
    # the system service: fine, we never use it (broker.sh runs its own node).
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
# procps: pgrep, which broker.sh uses to find a node that lost its pid file.
for pkg in librabbitmq-dev libssl-dev openssl pkg-config rabbitmq-server procps; do
    is_installed "$pkg" || missing+=("$pkg")
done
# A minimal Debian may lack Python altogether; Debian's python3-pip brings
# python3 with it.
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-pip)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "install-deps.sh: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

# pika (an independent AMQP client) and pydantic (the envelope model Python services
# validate with) must be importable by the `python3` on PATH, which may be a pyenv or venv
# interpreter rather than Debian's, so ask that interpreter's own pip.
for module in pika pydantic; do
    python3 -c "import $module" >/dev/null 2>&1 && continue
    if ! python3 -m pip --version >/dev/null 2>&1; then
        if [[ "$(command -v python3)" == /usr/bin/python3 ]]; then
            apt_install python3-pip
        else
            python3 -m ensurepip --upgrade
        fi
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
    # pydantic 2 or later: the interop script uses its v2 API (model_dump_json).
    requirement=$module
    [[ $module == pydantic ]] && requirement='pydantic>=2'
    echo "install-deps.sh: pip install $requirement"
    if ! out="$(python3 -m pip install --quiet "$requirement" 2>&1)"; then
        # Debian's own python3 is "externally managed" (PEP 668): pip refuses
        # unless told to. Only then do we override it.
        if grep -q externally-managed-environment <<<"$out"; then
            python3 -m pip install --quiet --break-system-packages "$requirement"
        else
            echo "$out" >&2
            exit 1
        fi
    fi
    python3 -c "import $module" || { echo "install-deps.sh: $module still not importable" >&2; exit 1; }
done
# An older pydantic (1.x) imports but lacks the v2 API.
python3 -c 'import pydantic, sys; sys.exit(int(pydantic.VERSION.split(".")[0]) < 2)' || {
    echo "install-deps.sh: pydantic 2 or later is needed: python3 -m pip install 'pydantic>=2'" >&2
    exit 1
}

echo "install-deps.sh: dependencies OK"
