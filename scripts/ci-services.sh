#!/usr/bin/env bash
# Make sure the servers the production-profile tests talk to are up: PostgreSQL on
# 127.0.0.1:5432 (trust auth) and Redis on 127.0.0.1:6379. Starts whichever is down,
# installing it from Debian's packages on a machine that lacks it.
set -euo pipefail

wait_for() { # name, probe command...
  local name=$1; shift
  for _ in $(seq 1 50); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "ci-services: $name did not come up" >&2
  return 1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then echo "ci-services: need root to install $*" >&2; return 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v pg_isready >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
  apt_install postgresql postgresql-client
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for postgresql pg_isready -q -h 127.0.0.1 -p 5432
fi

if ! command -v redis-server >/dev/null; then
  apt_install redis-server
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for redis sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi
echo "ci-services: postgresql and redis are up"
