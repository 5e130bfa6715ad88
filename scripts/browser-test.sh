#!/usr/bin/env bash
# Browser tests of the dashboard and tickwire.js against a real tickwire binary.
#
#   scripts/browser-test.sh <path-to-tickwire-binary>
#
# 1. installs what it needs, skipping what is present (Debian: chromium, chromium-driver,
#    node-typescript; selenium and pytest in the project's virtualenv, through deps.sh),
# 2. type-checks tickwire.d.ts with Tests/Browser/typecheck/usage.ts (tsc --strict),
# 3. runs the client's unit tests (node --test Tests/Browser/),
# 4. starts the binary on a free loopback port and runs pytest on Tests/Browser, which
#    stops and restarts it (same port) to test reconnection.
# The screenshot lands in .build/browser/dashboard.png. Exits non-zero on any failure.
set -euo pipefail

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 <path-to-tickwire-binary>" >&2
    exit 2
fi
binary=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
cd "$(dirname "$0")/.."

debian_packages=(chromium chromium-driver node-typescript)
missing=()
for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "browser-test: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# selenium and pytest come from the project's virtualenv, which deps.sh keeps at its pins.
VENV=${VENV:-.venv}
VENV="$VENV" scripts/deps.sh
python=$VENV/bin/python

echo "browser-test: tsc --noEmit -p Tests/Browser/typecheck"
tsc --noEmit -p Tests/Browser/typecheck

echo "browser-test: node --test Tests/Browser/"
node --test Tests/Browser/

work=$(mktemp -d)
pidfile="$work/server.pid"
log="$work/server.log"
status=1
cleanup() {
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [ "$status" -ne 0 ] && [ -s "$log" ]; then
        echo "browser-test: server log (last 40 lines):" >&2
        tail -n 40 "$log" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server_args=("$binary" --host 127.0.0.1 --port "$port" --workers 2)
server_cmd=$(printf '%q ' "${server_args[@]}") # for the tests' restart (shlex-split there)
echo "browser-test: starting $server_cmd"
# Started directly (not through eval or a subshell) so that $! is the server's own pid.
"${server_args[@]}" >>"$log" 2>&1 </dev/null &
echo $! >"$pidfile"

url="http://127.0.0.1:$port"
for _ in $(seq 200); do
    if "$python" -c "import urllib.request,sys; urllib.request.urlopen('$url/health', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "browser-test: server exited at start-up" >&2; exit 1; }
    sleep 0.1
done

mkdir -p .build/browser
set +e
"$python" -m pytest Tests/Browser -v -p no:cacheprovider \
    --server-url "$url" --server-cmd "$server_cmd" --server-pidfile "$pidfile" \
    --screenshot .build/browser/dashboard.png
status=$?
set -e
[ "$status" -eq 0 ] && echo "browser-test: screenshot in .build/browser/dashboard.png"
exit "$status"
