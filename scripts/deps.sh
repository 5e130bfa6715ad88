#!/usr/bin/env bash
# Installs what building and testing Tickwire needs on Debian, skipping what is present:
#   - Debian packages (apt-get, with sudo when not root),
#   - the Python tools of scripts/requirements.txt, into the project's virtualenv
#     ($VENV, default .venv/; git-ignored), never into the system Python (PEP 668).
# Idempotent: safe to run before every build; with everything in place it installs nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
# The interpreter the virtualenv is made from: Debian's own unless told otherwise.
BASE_PYTHON=${BASE_PYTHON:-/usr/bin/python3}
requirements=scripts/requirements.txt

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=""

# debian_install PACKAGE...: installs the packages that are not installed yet.
debian_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    echo "deps: installing ${missing[*]}"
    # A fresh machine has no package lists yet; refresh them once per run, before installing.
    if [ -z "$apt_updated" ]; then
        $sudo apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# EXTRA_DEBIAN: packages a make target needs beyond the build and tests (valgrind for `make profile`).
# openssl: the TLS tests make their certificates and speak s_client.
# zlib1g-dev: permessage-deflate (the CZlib system-library target).
# libhiredis-dev: the cluster's Redis client (CHiredis); redis-server: the cluster tests
# start their own on loopback.
debian_install libev-dev libssl-dev zlib1g-dev openssl python3 libhiredis-dev redis-server ${EXTRA_DEBIAN:-}

# Debian splits venv's ensurepip into python3-venv; without it `python3 -m venv` fails.
if [ "$BASE_PYTHON" = /usr/bin/python3 ] && ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
    debian_install python3-venv
fi

python=$VENV/bin/python
# A virtualenv whose interpreter or pip no longer runs (its base Python was removed, or an
# earlier creation was interrupted) is made again from scratch.
if [ -e "$VENV" ] && ! "$python" -m pip --version >/dev/null 2>&1; then
    echo "deps: $VENV is broken; recreating it"
    rm -rf "$VENV"
fi
if [ ! -e "$VENV" ]; then
    echo "deps: creating the virtualenv $VENV ($("$BASE_PYTHON" --version))"
    "$BASE_PYTHON" -m venv "$VENV"
fi

# The pinned requirements that the virtualenv lacks or has at another version.
mapfile -t wrong < <("$python" - "$requirements" <<'PYTHON'
import sys
from importlib.metadata import PackageNotFoundError, version

for line in open(sys.argv[1]):
    spec = line.split("#", 1)[0].strip()
    if not spec:
        continue
    name, want = spec.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        print(spec)
PYTHON
)
if ((${#wrong[@]})); then
    echo "deps: installing ${wrong[*]} into $VENV"
    "$python" -m pip install -q --disable-pip-version-check "${wrong[@]}"
fi
