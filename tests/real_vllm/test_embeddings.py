"""An embedding model behind `llmux serve`: the tiny model served by real vLLM's pooling
runner becomes ready (probed with one embedding: it serves no completions) and answers
/v1/embeddings through the gateway (issue 13)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.harness import Llmux, new_llmux
from tests.integration.test_engine_death import engine_pid, engine_tree, still_running
from tests.plugins.real_vllm import RealVllm

pytestmark = pytest.mark.timeout(900)  # one cold start of a real vLLM on 2 cores

POOLING = ["--runner", "pooling", "--convert", "embed"]
HIDDEN_SIZE = 256  # scripts/build_tiny_model.py


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Llmux]:
    server = new_llmux(tmp_path)
    yield server
    server.stop()


def embed(client: openai.OpenAI, texts: list[str]) -> list[list[float]]:
    answer = client.embeddings.create(model="tiny-embed", input=texts)
    assert [item.index for item in answer.data] == list(range(len(texts)))
    assert answer.usage.prompt_tokens > 0
    return [item.embedding for item in answer.data]


def test_a_real_pooling_model_becomes_ready_and_answers_embeddings(
    served: Llmux, real_vllm: RealVllm, short_tmp_dir: Path
) -> None:
    entry = real_vllm.entry(0, uds=str(short_tmp_dir / "e.sock"), sleep_level=5, extra_args=POOLING)
    served.start(
        real_vllm.config(
            {"tiny-embed": entry}, policy={"min_active_secs": 0, "request_timeout_secs": 900}
        )
    )
    client = served.client(timeout=900)
    first, second = embed(client, ["the engines", "a different text"])
    assert len(first) == len(second) == HIDDEN_SIZE
    assert first != second
    assert math.isclose(math.fsum(x * x for x in first), 1.0, rel_tol=1e-3)  # normalised
    (again,) = embed(client, ["the engines"])  # the same input, the same vector
    assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(again, first, strict=True))
    swaps = served.swaps()
    assert [(swap[1], swap[2], swap[3]) for swap in swaps] == [
        ("tiny-embed", "succeeded", "cold_start")
    ], swaps
    # A pooling runner serves no completions: its own 404, passed on in OpenAI's shape.
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="tiny-embed", prompt="hello", max_tokens=1)

    pid = engine_pid(served, "tiny-embed")
    assert pid is not None
    tree = engine_tree(pid)
    assert served.stop() == 0
    assert still_running(tree) == []
