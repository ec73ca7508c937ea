"""A real vLLM (its CPU build) and two tiny local models, for the real-engine tests.

scripts/install-vllm.sh (run by `make test`) installs vLLM's CPU build into an environment
of its own and builds the models; this fixture runs it again (a no-op once installed) and
fails, never skips, when it cannot: the real tier is part of the suite.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# What vLLM's CPU build needs on these 2-core, 24 GiB machines (ENGINE_CONTRACT §6): a
# fixed KV cache (the default share of memory refuses to start), no compile step, no
# usage reports sent out. float32: in bfloat16, on CPUs with Intel AMX, a worker was seen
# dying of SIGILL at its first request (AMX has no float32 path, so none is taken).
CPU_ARGS = [
    "--enforce-eager",
    "--kv-cache-memory-bytes",
    "268435456",
    "--max-model-len",
    "512",
    "--dtype",
    "float32",
]
CPU_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
# A real vLLM takes 20-60 s to start here, more on a loaded machine.
STARTUP_TIMEOUT_SECS = 300


@dataclass(frozen=True)
class RealVllm:
    """The `vllm` program and two models with the same shape and different weights."""

    command: str
    models: tuple[Path, Path]

    def entry(self, index: int, **extra: Any) -> dict[str, Any]:
        """An llmux config entry for model `index` (give `uds` or `port` in `extra`)."""
        args = [*CPU_ARGS, *extra.pop("extra_args", [])]
        env = {**CPU_ENV, **extra.pop("env", {})}
        return {
            "model_path": str(self.models[index]),
            "extra_args": args,
            "env": env,
            "startup_timeout_secs": STARTUP_TIMEOUT_SECS,
        } | extra

    def config(self, models: dict[str, dict[str, Any]], **top: Any) -> dict[str, Any]:
        """A whole llmux config running `models` with this vLLM."""
        return {"vllm_command": self.command, "models": models} | top


def install_vllm() -> RealVllm:
    done = subprocess.run(
        [str(REPO / "scripts" / "install-vllm.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/install-vllm.sh failed:\n{done.stderr[-4000:]}")
    command, first, second = done.stdout.strip().splitlines()[-3:]
    return RealVllm(command, (Path(first), Path(second)))


@pytest.fixture(scope="session")
def real_vllm() -> RealVllm:
    return install_vllm()
