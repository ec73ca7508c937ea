"""Checkpoint evictions through the real switcher with real CRIU (ENGINE_CONTRACT §4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmux_site.core.criu import Criu
from llmux_site.core.engine_client import CallTimeouts
from llmux_site.core.policy import EvictionPolicy
from llmux_site.core.process_actions import HostProcessActions
from llmux_site.core.switcher import run_switch
from llmux_site.core.switching import (
    BringUpKind,
    EngineStatus,
    EngineTarget,
    Outcome,
    SwitchPlan,
    SwitchResult,
)
from tests.checkpoints.images import DirectoryImages
from tests.checkpoints.test_criu import answer
from tests.core.switch_ports import InMemoryPorts, SimModels
from tests.simulator.harness import http_request

QUICK = CallTimeouts(health=1, control=2, sleep=5, wake=5, rpc=10, inference=5, probe=5)
WEIGHTS = ["--sim-weights-bytes", "256MiB"]  # the acceptance line's size


@pytest.fixture
def images(short_tmp_dir: Path) -> DirectoryImages:
    return DirectoryImages(short_tmp_dir / "images")


async def switch(
    ports: InMemoryPorts,
    actions: HostProcessActions,
    incoming: EngineTarget,
    outgoing: EngineTarget | None = None,
) -> SwitchResult:
    ports.waiting_for.setdefault(incoming.name, 1)
    plan = SwitchPlan(
        group="gpu0",
        incoming=ports.target(incoming),
        outgoing=ports.target(outgoing) if outgoing else None,
        stop_grace=2.0,
        settle_timeout=0.1,
        memory_tolerance_bytes=64 * 1024,
    )
    return await run_switch(plan, ports, timeouts=QUICK, process_actions=actions)


def ok(result: SwitchResult, bringup: BringUpKind) -> None:
    assert (result.outcome, result.bringup, result.error) == (Outcome.SUCCEEDED, bringup, "")


@pytest.mark.parametrize("label", ["offload+checkpoint", "discard+checkpoint"])
async def test_a_checkpointed_model_comes_back_with_its_pid_answer_and_weights(
    sims: SimModels, images: DirectoryImages, criu: Criu, label: str
) -> None:
    ports = sims.ports()
    actions = HostProcessActions(criu=criu, images=images)
    a = sims.target("m/a", uds=True, eviction=EvictionPolicy.from_label(label), extra_args=WEIGHTS)
    b = sims.target("m/b", uds=True)
    ok(await switch(ports, actions, a), BringUpKind.COLD_START)
    pid, before = ports.last(a.name).process.pid, answer(a)  # type: ignore[union-attr]
    sims.track(ports.last(a.name).process)  # type: ignore[arg-type]

    ok(await switch(ports, actions, b, a), BringUpKind.COLD_START)
    assert ports.last(a.name).status is EngineStatus.CHECKPOINTED
    assert images.events == [("dumped", "1")]

    ok(await switch(ports, actions, a, b), BringUpKind.RESTORE)
    restored = ports.last(a.name).process
    assert restored is not None and restored.pid == pid  # the same process, restored
    sims.track(restored)
    assert answer(a) == before
    assert http_request(a.address, "GET", "/sim/state").json()["weights_ok"] is True
    assert images.events == [("dumped", "1"), ("restored", "1")]


async def test_an_image_without_the_weights_is_a_fraction_of_one_with_them(
    sims: SimModels, images: DirectoryImages, criu: Criu
) -> None:
    ports = sims.ports()
    actions = HostProcessActions(criu=criu, images=images)
    sizes = {}
    for label in ("offload+checkpoint", "discard+checkpoint"):
        policy = EvictionPolicy.from_label(label)
        model = sims.target(
            f"m/{label.split('+')[0]}", uds=True, eviction=policy, extra_args=WEIGHTS
        )
        ok(await switch(ports, actions, model), BringUpKind.COLD_START)
        sims.track(ports.last(model.name).process)  # type: ignore[arg-type]
        other = sims.target(f"m/other-{label.split('+')[0]}", uds=True)
        ok(await switch(ports, actions, other, model), BringUpKind.COLD_START)
        sims.track(ports.last(other.name).process)  # type: ignore[arg-type]
        sizes[label] = images.size(model, "1")
    print("image bytes", sizes)
    # Weights dropped before the dump (vLLM level 2) leave only process state in the image.
    assert sizes["discard+checkpoint"] <= 0.3 * sizes["offload+checkpoint"], sizes
    assert sizes["offload+checkpoint"] > 256 * 1024 * 1024


async def test_a_corrupted_image_fails_the_restore_keeps_the_image_and_cold_starts(
    sims: SimModels, images: DirectoryImages, criu: Criu
) -> None:
    ports = sims.ports()
    actions = HostProcessActions(criu=criu, images=images)
    policy = EvictionPolicy.from_label("discard+checkpoint")
    a = sims.target("m/a", uds=True, eviction=policy)
    b = sims.target("m/b", uds=True)
    ok(await switch(ports, actions, a), BringUpKind.COLD_START)
    ok(await switch(ports, actions, b, a), BringUpKind.COLD_START)
    sims.track(ports.last(b.name).process)  # type: ignore[arg-type]
    image = images.latest(a)
    assert image is not None
    next(image.glob("core-*.img")).write_bytes(b"\0" * 64)

    failed = await switch(ports, actions, a, b)
    assert failed.outcome is Outcome.FAILED and "restore" in failed.error
    assert image.exists() and (image / "FAILED").exists()  # kept, and marked
    assert images.latest(a) is None  # never tried again

    ok(await switch(ports, actions, a), BringUpKind.COLD_START)  # the next request works
    sims.track(ports.last(a.name).process)  # type: ignore[arg-type]
    assert answer(a)
