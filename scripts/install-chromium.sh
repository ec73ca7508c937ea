#!/usr/bin/env bash
# Debian's chromium for the browser tests (Playwright drives it: no browser download).
# Idempotent: does nothing when /usr/bin/chromium is there. Prints the path on success.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    echo "install-chromium: installing Debian's chromium" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null >&2 || true
echo /usr/bin/chromium
