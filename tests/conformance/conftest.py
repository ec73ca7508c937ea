"""The conformance suite's engines: one llmux per engine kind (the simulator, then a real
vLLM), each with a generation and an embedding model, shared by every scenario of the
package and stopped after its last one. Scenarios take `target` (an engine kind, directly
or through the gateway) or `stack` (an engine kind) and assert the same things of each."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conformance.stack import Stack, Target, new_stack, simulator_config, vllm_config
from tests.plugins.process_guard import allow_process

ENGINES = ("simulator", "vllm")
VIAS = ("direct", "gateway")


@pytest.fixture(scope="package", params=ENGINES)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A running llmux of one engine kind with both models up (pytest runs the scenarios
    of one kind together, so one real vLLM pair is alive at a time)."""
    engine: str = request.param
    sockets = Path(tempfile.mkdtemp(prefix="llmux-conf-", dir="/tmp"))  # short socket paths
    running = new_stack(engine, tmp_path_factory.mktemp(f"conformance-{engine}"), sockets)
    try:
        if engine == "vllm":
            config = vllm_config(request.getfixturevalue("real_vllm"), running.sockets)
        else:
            config = simulator_config(running.sockets)
        running.bring_up(config)
        _allow_llmux_processes(request.config, running)
        yield running
    finally:
        running.server.stop()  # stops the engines too
        shutil.rmtree(sockets, ignore_errors=True)


def _allow_llmux_processes(config: pytest.Config, running: Stack) -> None:
    """llmux and its engines outlive each scenario (the package stops them)."""
    process = running.server.process
    assert process is not None
    allow_process(config, process.pid)
    for child in psutil.Process(process.pid).children(recursive=True):
        allow_process(config, child.pid)


@pytest.fixture(params=VIAS)
def target(request: pytest.FixtureRequest, stack: Stack) -> Target:
    """The stack's engines, directly (their sockets) or through llmux's gateway."""
    return stack.target(request.param)
