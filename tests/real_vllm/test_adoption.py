"""`llmux serve` restarted while a real vLLM engine runs (LLMUX_KEEP_ENGINES_ON_EXIT=true):
the new run adopts the engine by its identity, starts nothing, and the engine answers
(issue 13)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from llmux_site.core.engine_log import RUN_MARKER
from tests.integration.harness import Llmux, new_llmux
from tests.integration.test_engine_death import engine_tree, still_running
from tests.plugins.real_vllm import RealVllm
from tests.real_vllm.test_stop_switching import chat

pytestmark = pytest.mark.timeout(900)  # one cold start of a real vLLM on 2 cores

KEEP = {"LLMUX_KEEP_ENGINES_ON_EXIT": "true"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Llmux]:
    server = new_llmux(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def kept() -> Iterator[list[psutil.Process]]:
    """Engine processes a failed test may leave running: no llmux stops them then."""
    processes: list[psutil.Process] = []
    yield processes
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()


def identity(server: Llmux) -> tuple[str, int, float]:
    ((state, pid, create_time),) = server.query(
        "SELECT state, pid, create_time FROM models_app_engineruntime"
    )
    return state, pid, create_time


def restart(server: Llmux, config: dict[str, object], env: dict[str, str]) -> None:
    assert server.stop() == 0
    # The harness waits for "ready" in serve.log: the next run starts a fresh one.
    log = server.data_dir / "serve.log"
    log.rename(log.with_name(f"serve-{len(list(server.data_dir.glob('serve*.log')))}.log"))
    server.start(config, env=env)  # type: ignore[arg-type]


def test_a_restarted_llmux_adopts_the_running_engine_and_starts_nothing(
    served: Llmux, real_vllm: RealVllm, short_tmp_dir: Path, kept: list[psutil.Process]
) -> None:
    config = real_vllm.config(
        {"tiny": real_vllm.entry(0, uds=str(short_tmp_dir / "a.sock"), sleep_level=5)},
        policy={"min_active_secs": 0, "request_timeout_secs": 900},
    )
    served.start(config, env=KEEP)
    before = chat(served.client(timeout=900), "tiny", stream=False)
    assert before
    running = identity(served)
    assert running[0] == "running"
    tree = engine_tree(running[1])
    kept.extend(tree)

    restart(served, config, env=KEEP)
    assert len(still_running(tree, timeout=0)) == len(tree)  # left running, all of it
    assert identity(served) == running  # the new run holds the same engine, by identity
    assert chat(served.client(timeout=900), "tiny", stream=True) == before
    assert identity(served) == running
    assert len(served.swaps()) == 1  # the first run's cold start: nothing started since
    engine_log = (served.data_dir / "logs" / "tiny.log").read_text()
    assert engine_log.count(RUN_MARKER) == 1  # one engine ever started

    restart(served, config, env={})  # without KEEP, its stop ends the engine
    assert served.stop() == 0
    assert still_running(tree) == []
