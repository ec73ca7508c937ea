"""Real CRIU dumps and restores a simulated engine on a Unix socket (ENGINE_CONTRACT §4-5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmux_site.core import lifecycle, processes
from llmux_site.core.criu import Criu, CriuError
from llmux_site.core.switching import EngineTarget
from tests.core.switch_ports import SimModels
from tests.simulator.harness import http_request
from tests.timeouts import ROOMY

REPO = Path(__file__).resolve().parents[2]


def answer(target: EngineTarget) -> str:
    body = {"model": target.served_name, "prompt": "remember", "max_tokens": 8, "temperature": 0}
    reply = http_request(target.address, "POST", "/v1/completions", body)
    assert reply.status == 200, reply.body
    return str(reply.json()["choices"][0]["text"])


async def test_a_dumped_engine_comes_back_with_its_pid_answer_and_weights(
    sims: SimModels, criu: Criu, short_tmp_dir: Path
) -> None:
    target = sims.target("m/criu", uds=True, extra_args=["--sim-weights-bytes", "16MiB"])
    process = sims.track(await lifecycle.cold_start(target, timeouts=ROOMY))
    before = answer(target)

    dumped = await asyncio.to_thread(criu.dump, process, short_tmp_dir / "image")
    assert not processes.is_alive(process)  # the dump ends the tree
    assert dumped.bytes > 16 * 1024 * 1024  # the weights are in the image
    assert (dumped.images_dir / "dump.log").is_file()

    restored = await asyncio.to_thread(criu.restore, dumped.images_dir)
    back = sims.track(restored.process)
    assert back.pid == process.pid  # CRIU restores the pids it dumped
    assert (dumped.images_dir / "restore.log").is_file()
    await lifecycle.readiness(target, back, timeouts=ROOMY)
    assert answer(target) == before
    state = http_request(target.address, "GET", "/sim/state").json()
    assert state["weights_ok"] is True


async def test_a_failed_restore_says_why_and_keeps_the_image(
    sims: SimModels, criu: Criu, short_tmp_dir: Path
) -> None:
    target = sims.target("m/broken", uds=True)
    process = sims.track(await lifecycle.cold_start(target, timeouts=ROOMY))
    dumped = await asyncio.to_thread(criu.dump, process, short_tmp_dir / "image")
    core = next(dumped.images_dir.glob("core-*.img"))
    core.write_bytes(b"\0" * 64)  # a corrupted image

    with pytest.raises(CriuError, match="criu restore exited") as caught:
        await asyncio.to_thread(criu.restore, dumped.images_dir)
    assert caught.value.log_tail  # the end of CRIU's own log comes with it
    assert core.exists() and (dumped.images_dir / "restore.log").is_file()
