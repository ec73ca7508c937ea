#!/usr/bin/env bash
# The serve-path and switch benchmarks on the GPU machine's CPUs (docs/PERFORMANCE.md,
# "Issue 14: ... several web processes"). That machine has Python 3.12 but none of our
# packages, no Redis and no network, so they travel with the working tree:
#
#   scripts/device_bench.sh prepare   # here: py3.12 wheels into .whl/, redis-server into .redis/
#   bash scripts/device_bench.sh run  # there (device tool, carry [".whl", ".redis"])
#
# .whl/ and .redis/ belong in .git/info/exclude. The run writes its tables to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || printf '/.whl/\n/.redis/\n' >> .git/info/exclude
    python3 - > /tmp/llmux-device-requirements.txt <<'PY'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
    rm -rf .whl && mkdir -p .whl .redis
    .venv/bin/pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
        -d .whl -r /tmp/llmux-device-requirements.txt
    # Packages that machine's image already holds (KINDS.md of the device tool).
    for name in pyyaml psutil multidict yarl frozenlist propcache attrs idna typing_extensions \
        packaging msgpack aiosignal aiohappyeyeballs; do
        rm -f .whl/"$name"-*.whl
    done
    cp /usr/bin/redis-server .redis/
    cp /lib/x86_64-linux-gnu/libjemalloc.so.2 /lib/x86_64-linux-gnu/liblzf.so.1 .redis/
    du -sh .whl .redis
}

run() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    mkdir -p /tmp/bin
    printf '#!/bin/sh\nPYTHONPATH=%s:/tmp/site exec python3 -m llmux_site.simulator "$@"\n' \
        "$PWD" > /tmp/bin/llmux-sim
    chmod +x /tmp/bin/llmux-sim
    export PATH=/tmp/bin:$PATH
    LD_LIBRARY_PATH=$PWD/.redis .redis/redis-server --port 6379 --save '' --daemonize yes \
        --logfile /tmp/redis.log
    out=${OUT:-/tmp}
    timeout 200 python3 scripts/bench_serve.py --profiles embedded,sqlite-redis --rounds 1 \
        --seconds 8 2>"$out/serve.err" | tee "$out/serve.md"
    timeout 170 python3 scripts/bench_switch.py --switches 20 --profiles embedded,sqlite-redis \
        2>"$out/switch.err" | tee "$out/switch.md"
}

"${1:-run}"
