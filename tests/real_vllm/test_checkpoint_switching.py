"""Two real vLLM engines behind `llmux serve`, evicted by CRIU checkpoint (issue 13, second
acceptance line): the CPU build cannot sleep, so weights stay in the image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmux_site.core.criu import Criu
from tests.integration.harness import Llmux, new_llmux
from tests.plugins.real_vllm import RealVllm
from tests.real_vllm.test_stop_switching import chat, engine_processes

pytestmark = pytest.mark.timeout(1800)

CHECKPOINT = {"weights": "retain", "process": "checkpoint"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Llmux]:
    server = new_llmux(tmp_path)
    yield server
    server.stop()


def images(server: Llmux) -> list[tuple[str, str, int, int]]:
    return server.query(
        "SELECT model_name, status, restored_count, bytes FROM checkpoints_app_checkpointimage "
        "ORDER BY id"
    )


def test_real_models_are_restored_from_their_images_with_the_same_answers(
    served: Llmux, real_vllm: RealVllm, criu: Criu, short_tmp_dir: Path
) -> None:
    config = real_vllm.config(
        {
            "tiny-a": real_vllm.entry(0, uds=str(short_tmp_dir / "a.sock"), eviction=CHECKPOINT),
            "tiny-b": real_vllm.entry(1, uds=str(short_tmp_dir / "b.sock"), eviction=CHECKPOINT),
        },
        policy={"min_active_secs": 0, "request_timeout_secs": 900},
        checkpoint={
            "criu_path": criu.binary,
            "images_dir": str(short_tmp_dir / "images"),
            "keep_images": True,
        },
    )
    served.start(config)
    client = served.client(timeout=900)
    answers: dict[str, str] = {}
    for turn in range(8):  # each switch right after the other model's request
        model = ("tiny-a", "tiny-b")[turn % 2]
        text = chat(client, model, stream=turn % 4 >= 2)
        assert text, f"turn {turn}: {model} answered nothing"
        assert text == answers.setdefault(model, text), f"turn {turn}: {model} changed"
    assert answers["tiny-a"] != answers["tiny-b"]

    swaps = served.swaps()
    assert [(swap[2], swap[3]) for swap in swaps[:2]] == [("succeeded", "cold_start")] * 2
    # Every switch after the first two restored from an image: no fallback to a cold start.
    assert [(swap[2], swap[3]) for swap in swaps[2:]] == [("succeeded", "restore")] * 6, swaps
    assert not any(swap[4] for swap in swaps)  # no eviction escalated to stop
    kept = images(served)
    assert [(name, status) for name, status, _, _ in kept] == [
        ("tiny-a", "ready"),
        ("tiny-b", "ready"),
    ]
    assert all(restored >= 2 for _, _, restored, _ in kept), kept  # each restored twice+

    assert served.stop() == 0
    assert engine_processes(real_vllm.models) == []
