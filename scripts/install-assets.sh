#!/usr/bin/env bash
# The dashboard's browser libraries (package.json: plotly.js's cartesian bundle) from the
# npm registry into node_modules/, as package-lock.json pins them (version and integrity).
# Nothing of theirs is committed; dashboard.assets.PackageAssetFinder serves them.
# Idempotent: does nothing when node_modules/ already matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
installed=node_modules/.package-lock.json
if [ -f "$installed" ] && [ "$installed" -nt package-lock.json ] && [ "$installed" -nt package.json ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "install-assets: installing Debian's npm" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq npm >/dev/null
fi
# --ignore-scripts: a bundle needs no install step of its own, and none is run.
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2
touch "$installed"
