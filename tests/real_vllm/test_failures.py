"""A real vLLM engine killed mid-stream behind `llmux serve` (issue 13): kill -9 of its API
process, then of its engine core. Each time the openai client gets an OpenAI-shaped error,
the whole engine tree is gone, and the next request cold-starts the engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from tests.integration.harness import Llmux, new_llmux
from tests.integration.test_engine_death import (
    assert_openai_error,
    engine_pid,
    engine_tree,
    still_running,
    stream_and_kill,
)
from tests.plugins.real_vllm import RealVllm
from tests.real_vllm.test_stop_switching import chat

pytestmark = pytest.mark.timeout(1800)  # three cold starts of a real vLLM on 2 cores

# Streams long enough to be still running when the kill lands, even when the gateway and
# the client are starved of CPU for seconds: vLLM makes about 400 tokens a second here and
# runs ahead of a slow reader (a CI run once read 1,082 tokens of one stream to its end
# after the kill, all made before it). So eight answers at once, each the tiny model's
# whole context (the tier's default max-model-len is 512): about 15,000 tokens to make.
CONTEXT = ["--max-model-len", "2048"]
LONG_ANSWER = 1900
ANSWERS = 8


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Llmux]:
    server = new_llmux(tmp_path)
    yield server
    server.stop()


def engine_core(tree: list[psutil.Process]) -> psutil.Process:
    """vLLM's engine-core process (it names itself VLLM::EngineCore)."""
    (core,) = [p for p in tree if "EngineCore" in " ".join([p.name(), *p.cmdline()])]
    return core


def kill_mid_stream(server: Llmux, client: openai.OpenAI, pick_victim: str) -> None:
    pid = engine_pid(server, "tiny")
    assert pid is not None
    tree = engine_tree(pid)
    victim = tree[0] if pick_victim == "api" else engine_core(tree)
    streaming = client.with_options(timeout=120)  # an error, never a hang
    assert_openai_error(
        stream_and_kill(streaming, "tiny", victim, max_tokens=LONG_ANSWER, n=ANSWERS)
    )
    assert still_running(tree) == [], f"after a kill -9 of the {pick_victim} process"


def test_a_real_engine_killed_mid_stream_errors_ends_its_tree_and_cold_starts(
    served: Llmux, real_vllm: RealVllm, short_tmp_dir: Path
) -> None:
    served.start(
        real_vllm.config(
            {
                "tiny": real_vllm.entry(
                    0, uds=str(short_tmp_dir / "a.sock"), sleep_level=5, extra_args=CONTEXT
                )
            },
            policy={"min_active_secs": 0, "request_timeout_secs": 900},
        )
    )
    client = served.client(timeout=900)
    before = chat(client, "tiny", stream=False)
    assert before

    for victim in ("api", "engine core"):
        old_pid = engine_pid(served, "tiny")
        kill_mid_stream(served, client, victim)
        assert chat(client, "tiny", stream=False) == before, f"after the {victim} died"
        assert engine_pid(served, "tiny") not in (None, old_pid)
        last = served.swaps()[-1]
        assert (last[1], last[2], last[3]) == ("tiny", "succeeded", "cold_start"), last

    last_pid = engine_pid(served, "tiny")
    assert last_pid is not None
    last_tree = engine_tree(last_pid)
    assert served.stop() == 0
    assert still_running(last_tree) == []
