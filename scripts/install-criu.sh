#!/usr/bin/env bash
# Make CRIU 4 available to llmux and print the command that runs it (ENGINE_CONTRACT §5).
#
#   scripts/install-criu.sh [DIR]      # DIR defaults to .criu in the repository
#
# Debian 13 (or any system whose own criu is 4.x): the system's criu, installed with apt.
# Debian 12: its criu 3.17 fails on recent kernels (vDSO), so Debian 13's criu and the
# libraries it needs (libc included) are downloaded with apt from a private sources list
# and unpacked into DIR, never installed system-wide; DIR/criu runs that criu through
# DIR's own dynamic loader. Idempotent: a DIR whose criu already answers is kept.
# The last line printed is the path of a criu to run; `criu check` must say it looks good.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$REPO/.criu}"
PACKAGES="criu libcompel1 libc6 libgnutls30t64 libnftables1 libnl-3-200 libprotobuf-c1
libuuid1 libbsd0 libnet1 libmd0 libnftnl11 libmnl0 libjansson4 libxtables12 libidn2-0
libp11-kit0 libtasn1-6 libnettle8t64 libhogweed6t64 libgmp10 libunistring5 libffi8 libedit2
libtinfo6 libgcc-s1 libzstd1 liblz4-1"

say() { echo "install-criu: $*" >&2; }

major_of() { "$1" --version 2>/dev/null | sed -n 's/^Version: *\([0-9]*\).*/\1/p' | head -1; }

use() {  # print the criu to run, after checking it works on this kernel
    if ! "$1" check >/dev/null 2>&1; then
        say "$1 check failed:"
        "$1" check >&2 || true
        exit 1
    fi
    echo "$1"
}

system_criu="$(command -v criu || true)"
if [ -n "$system_criu" ] && [ "$(major_of "$system_criu")" -ge 4 ] 2>/dev/null; then
    use "$system_criu"
    exit 0
fi

. /etc/os-release
if [ "${VERSION_CODENAME:-}" = "trixie" ] || [ "${VERSION_ID:-0}" -ge 13 ] 2>/dev/null; then
    say "installing criu from this system's own packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq criu >/dev/null
    use "$(command -v criu)"
    exit 0
fi

if [ -x "$DIR/criu" ] && [ "$(major_of "$DIR/criu")" -ge 4 ] 2>/dev/null; then
    use "$DIR/criu"
    exit 0
fi

say "unpacking Debian 13's criu into $DIR (this system: ${PRETTY_NAME:-unknown})"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/debs" "$DIR.new"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] http://deb.debian.org/debian trixie main" >"$work/sources.list"
apt_private=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=-"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache::Archives=$work/debs"
    -o "APT::Architecture=amd64"
    -o "APT::Sandbox::User=root"
)
apt-get "${apt_private[@]}" update -qq
# shellcheck disable=SC2086 # one word per package
(cd "$work/debs" && apt-get "${apt_private[@]}" download $PACKAGES >/dev/null)
rm -rf "$DIR.new" && mkdir -p "$DIR.new"
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$DIR.new/root"
done
root="$DIR/root"
libs="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
cat >"$DIR.new/criu" <<EOF
#!/bin/sh
# Debian 13's criu through its own libc (scripts/install-criu.sh): never installed system-wide.
exec "$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$libs" \\
    "$root/usr/sbin/criu" "\$@"
EOF
chmod +x "$DIR.new/criu"
rm -rf "$DIR" && mv "$DIR.new" "$DIR"
use "$DIR/criu"
