#!/usr/bin/env bash
# Make CRIU 4.2 or newer available to llmux and print the command that runs it
# (ENGINE_CONTRACT §5).
#
#   scripts/install-criu.sh [DIR]      # DIR defaults to .criu in the repository
#
# Why 4.2: on kernels 6.16 and newer, CRIU 4.1 cannot dump a TCP socket ("Can't get 1:16
# opt", CRIU issues #2705 and #2718), and a real vLLM's worker always holds loopback TCP
# listeners (torch.distributed). Debian 12 ships 3.17 and Debian 13 4.1.1; Debian's
# unstable release has 4.2.1. So unless this system's own criu is 4.2 or newer, unstable's
# criu and the libraries it needs (libc included: its dependency closure, computed by apt)
# are downloaded with apt from a private sources list and unpacked into DIR, never
# installed system-wide; DIR/criu runs that criu through DIR's own dynamic loader.
# Idempotent: a DIR whose criu already answers with 4.2 or newer is kept.
# The last line printed is the path of a criu to run; `criu check` must say it looks good.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$REPO/.criu}"
SUITE="${LLMUX_CRIU_SUITE:-sid}"

say() { echo "install-criu: $*" >&2; }

# 1 when "$1 --version" is at least 4.2.
recent() {
    local version
    version="$("$@" --version 2>/dev/null | sed -n 's/^Version: *\([0-9][0-9.]*\).*/\1/p' | head -1)"
    [ -n "$version" ] || return 1
    printf '4.2\n%s\n' "$version" | sort -V -C
}

use() {  # print the criu to run, after checking it works on this kernel
    if ! "$1" check >/dev/null 2>&1; then
        say "$1 check failed:"
        "$1" check >&2 || true
        exit 1
    fi
    echo "$1"
}

# DIR/criu is always a wrapper of ours: it runs the criu found or unpacked here with
# scripts/criu/amx_permission.c preloaded (a restored engine inherits Intel AMX's
# permission from criu, which CRIU itself does not restore), where gcc can build it.
amx_library() {
    local source="$REPO/scripts/criu/amx_permission.c" library="$DIR/amx_permission.so"
    if [ "$(uname -m)" = x86_64 ] && command -v gcc >/dev/null 2>&1; then
        if [ ! -f "$library" ] || [ "$source" -nt "$library" ]; then
            gcc -O2 -shared -fPIC -o "$library" "$source"
        fi
        echo "$library"
    fi
}

wrap() {  # $1: a criu to run, $2: a dynamic loader line to run it through (or empty)
    local library preload=""
    library="$(amx_library)"
    mkdir -p "$DIR"
    if [ -n "$2" ]; then
        [ -z "$library" ] || preload="--preload $library"
        printf '#!/bin/sh\n# %s\nexec %s %s "%s" "$@"\n' \
            "Debian's criu through its own libc (scripts/install-criu.sh)" \
            "$2" "$preload" "$1" >"$DIR/criu.new"
    else
        [ -z "$library" ] || preload="LD_PRELOAD=$library "
        printf '#!/bin/sh\n# %s\n%sexec "%s" "$@"\n' \
            "the system's criu (scripts/install-criu.sh)" "$preload" "$1" >"$DIR/criu.new"
    fi
    chmod +x "$DIR/criu.new"
    mv "$DIR/criu.new" "$DIR/criu"
    use "$DIR/criu"
}

root="$DIR/root"
libs="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
loader="$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $libs"

system_criu="$(command -v criu || true)"
if [ -n "$system_criu" ] && recent "$system_criu"; then
    wrap "$system_criu" ""
    exit 0
fi

# shellcheck disable=SC2086 # the loader line is words
if [ -x "$root/usr/sbin/criu" ] && recent $loader "$root/usr/sbin/criu"; then
    wrap "$root/usr/sbin/criu" "$loader"
    exit 0
fi

. /etc/os-release
say "unpacking Debian $SUITE's criu into $DIR (this system: ${PRETTY_NAME:-unknown})"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/debs" "$DIR.new"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] http://deb.debian.org/debian $SUITE main" >"$work/sources.list"
apt_private=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=-"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache::Archives=$work/debs"
    -o "APT::Architecture=amd64"
    -o "APT::Sandbox::User=root"
)
apt-get "${apt_private[@]}" update -qq
# criu and everything it needs, as that release's packages say (names change between
# releases, e.g. libnet1 -> libnet9): the closure of its dependencies.
packages="$(apt-cache "${apt_private[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances criu | grep -E '^[a-z0-9]' | sort -u)"
# shellcheck disable=SC2086 # one word per package
(cd "$work/debs" && apt-get "${apt_private[@]}" download $packages >/dev/null)
rm -rf "$DIR.new" && mkdir -p "$DIR.new"
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$DIR.new/root"
done
rm -rf "$DIR" && mv "$DIR.new" "$DIR"
wrap "$root/usr/sbin/criu" "$loader"
