#!/usr/bin/env bash
# Installs what building and testing Tickwire needs on Debian, skipping what is present.
# Idempotent: safe to run before every build.
set -euo pipefail

debian_packages=(libev-dev libssl-dev python3)
python_packages=("kosoku==0.1.0")

missing=()
for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "deps: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

for spec in "${python_packages[@]}"; do
    name="${spec%%==*}"
    want="${spec##*==}"
    have=$(python3 -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    if [ "$have" != "$want" ]; then
        echo "deps: installing $spec"
        python3 -m pip install -q --disable-pip-version-check "$spec" 2>&1 | grep -v "Running pip as the 'root' user" || true
    fi
done
