"""Two real vLLM engines (CPU build, tiny local models) behind `llmux serve`, switched by
stop eviction with the official openai client (issue 13, first acceptance line)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from tests.integration.harness import Llmux, new_llmux
from tests.plugins.real_vllm import RealVllm

pytestmark = pytest.mark.timeout(1800)  # ten cold starts of a real vLLM on 2 cores

QUESTION = [{"role": "user", "content": "tell me about the engines"}]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Llmux]:
    server = new_llmux(tmp_path)
    yield server
    server.stop()


def chat(client: openai.OpenAI, model: str, *, stream: bool) -> str:
    """The model's answer at temperature 0, streamed or not."""
    if not stream:
        answer = client.chat.completions.create(
            model=model, messages=QUESTION, temperature=0, max_tokens=12
        )
        return answer.choices[0].message.content or ""
    chunks = client.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=12, stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def engine_processes(models: tuple[Path, ...]) -> list[psutil.Process]:
    paths = {str(model) for model in models}
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if paths & set(process.info["cmdline"] or ()):
            found.append(process)
    return found


def engine_leftovers_in(directory: str, before: set[str]) -> list[str]:
    """Files an engine leaves in a temporary directory: vLLM's sockets and vllm_dist_*."""
    return sorted(
        name
        for name in set(os.listdir(directory)) - before
        if name.startswith(("vllm", "torchinductor")) or len(name) == 36  # uuid socket names
    )


def test_two_real_models_alternate_by_stop_and_leave_nothing_behind(
    served: Llmux, real_vllm: RealVllm, short_tmp_dir: Path
) -> None:
    config = real_vllm.config(
        {
            "tiny-a": real_vllm.entry(0, uds=str(short_tmp_dir / "a.sock"), sleep_level=5),
            "tiny-b": real_vllm.entry(1, uds=str(short_tmp_dir / "b.sock"), sleep_level=5),
        },
        policy={"min_active_secs": 0, "request_timeout_secs": 900},
    )
    system_tmp = tempfile.gettempdir()
    tmp_before = set(os.listdir(system_tmp))
    served.start(config)
    client = served.client(timeout=900)
    answers: dict[str, str] = {}
    for turn in range(10):
        model = ("tiny-a", "tiny-b")[turn % 2]
        text = chat(client, model, stream=turn % 4 >= 2)
        assert text, f"turn {turn}: {model} answered nothing"
        assert text == answers.setdefault(model, text), f"turn {turn}: {model} changed its answer"
    assert answers["tiny-a"] != answers["tiny-b"]  # the right model answered each time
    swaps = served.swaps()
    assert len(swaps) == 10
    assert [(swap[1], swap[2]) for swap in swaps] == [
        (("tiny-a", "tiny-b")[turn % 2], "succeeded") for turn in range(10)
    ]

    assert served.stop() == 0
    assert engine_processes(real_vllm.models) == []
    assert sorted(p.name for p in short_tmp_dir.iterdir()) == []  # no socket file left
    assert engine_leftovers_in(system_tmp, tmp_before) == []
    run_dir = served.data_dir / "run"
    assert [p.name for p in run_dir.rglob("*") if p.is_socket()] == []
