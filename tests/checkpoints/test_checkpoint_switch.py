"""Checkpoint evictions through the real switcher with real CRIU (ENGINE_CONTRACT §4)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import psutil
import pytest

from llmux_site.core import processes
from llmux_site.core.criu import Criu
from llmux_site.core.cuda_helper import InProcess
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.images import read_meta
from llmux_site.core.process_actions import HostProcessActions
from llmux_site.core.processes import EngineProcess
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
from tests.core.test_cuda_suspend import stand_in
from tests.simulator.harness import http_request
from tests.timeouts import ROOMY

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
    return await run_switch(plan, ports, timeouts=ROOMY, process_actions=actions)


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
    assert images.events == [
        ("dumped", "1"),
        ("restoring", "1"),
        ("restored", "1"),
        ("verified", "1"),
    ]
    # Progress was reported on the way, while the image was written and read back (a
    # slow box may sample before the first byte: 0 is a fair report then).
    seen = [done for name, done, _ in images.progress_seen if name == "1"]
    size = images.size(a, "1")
    assert any(0 < done < size for done in seen) and max(seen) >= size, seen


async def test_a_cancelled_restore_runs_to_its_end_and_stops_the_engine_it_made(
    sims: SimModels, images: DirectoryImages, criu: Criu
) -> None:
    """A switch that loses its lease is cancelled; criu cannot stop halfway, and an engine
    restored behind the switch's back would hold the GPU unrecorded."""
    ports = sims.ports()
    actions = HostProcessActions(criu=criu, images=images)
    policy = EvictionPolicy.from_label("offload+checkpoint")
    a = sims.target("m/a", uds=True, eviction=policy, extra_args=WEIGHTS)
    b = sims.target("m/b", uds=True)
    ok(await switch(ports, actions, a), BringUpKind.COLD_START)
    ok(await switch(ports, actions, b, a), BringUpKind.COLD_START)
    sims.track(ports.last(b.name).process)  # type: ignore[arg-type]

    restore = asyncio.ensure_future(actions.restore(ports.target(a)))
    while ("restoring", "1") not in images.events:
        await asyncio.sleep(0.001)
    restore.cancel()
    with pytest.raises(asyncio.CancelledError):
        await restore
    assert images.events[1:] == [("restoring", "1"), ("restored", "1")]  # not half done
    assert simulator_pids(sims) == [ports.last(b.name).process.pid]  # type: ignore[union-attr]
    # The image is intact: the next bring-up restores it.
    ok(await switch(ports, actions, a, b), BringUpKind.RESTORE)
    sims.track(ports.last(a.name).process)  # type: ignore[arg-type]
    assert http_request(a.address, "GET", "/sim/state").json()["weights_ok"] is True


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


async def test_a_corrupted_image_is_kept_and_marked_and_the_model_cold_starts_at_once(
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

    # The same switch falls back to a cold start, so the waiting request is served; the
    # swap history says why.
    fallback = await switch(ports, actions, a, b)
    assert (fallback.outcome, fallback.bringup) == (Outcome.SUCCEEDED, BringUpKind.COLD_START)
    assert "restore of m/a failed" in fallback.error and "cold-started" in fallback.error
    sims.track(ports.last(a.name).process)  # type: ignore[arg-type]
    assert answer(a)
    assert image.exists() and (image / "FAILED").exists()  # kept, and marked
    assert images.latest(a) is None  # never tried again
    assert ("restore_failed", image.name) in images.events


async def test_a_disk_budget_too_small_downgrades_the_eviction_to_stop(
    sims: SimModels, images: DirectoryImages, criu: Criu
) -> None:
    ports = sims.ports()
    images.room = 1024  # bytes: no engine fits
    actions = HostProcessActions(criu=criu, images=images)
    a = sims.target("m/a", uds=True, eviction=EvictionPolicy.from_label("offload+checkpoint"))
    b = sims.target("m/b", uds=True)
    ok(await switch(ports, actions, a), BringUpKind.COLD_START)
    sims.track(ports.last(a.name).process)  # type: ignore[arg-type]

    result = await switch(ports, actions, b, a)
    sims.track(ports.last(b.name).process)  # type: ignore[arg-type]
    assert (result.outcome, result.bringup) == (Outcome.SUCCEEDED, BringUpKind.COLD_START)
    assert result.escalated and "needs" in result.error  # recorded, with the reason
    assert ports.last(a.name).status is EngineStatus.STOPPED
    assert images.events == [] and not images.root.exists()  # nothing written


def shm_leftovers() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(("link_remap", "sem."))}


async def test_twenty_cycles_of_two_alternating_models_leave_nothing_behind(
    sims: SimModels, images: DirectoryImages, criu: Criu
) -> None:
    """Each model is dumped, restored, and dumped again into a fresh image, ten times."""
    shm_before = shm_leftovers()
    ports = sims.ports()
    actions = HostProcessActions(criu=criu, images=images)
    policy = EvictionPolicy.from_label("discard+checkpoint")
    models = [
        sims.target(f"m/{name}", uds=True, eviction=policy, extra_args=WEIGHTS)
        for name in ("a", "b")
    ]
    ok(await switch(ports, actions, models[0]), BringUpKind.COLD_START)
    pids = {models[0].name: ports.last(models[0].name).process.pid}  # type: ignore[union-attr]
    answers = {models[0].name: answer(models[0])}
    for cycle in range(20):
        incoming, outgoing = models[(cycle + 1) % 2], models[cycle % 2]
        result = await switch(ports, actions, incoming, outgoing)
        ok(result, BringUpKind.COLD_START if cycle == 0 else BringUpKind.RESTORE)
        process = ports.last(incoming.name).process
        assert process is not None
        assert pids.setdefault(incoming.name, process.pid) == process.pid
        assert answers.setdefault(incoming.name, answer(incoming)) == answer(incoming)
        assert http_request(incoming.address, "GET", "/sim/state").json()["weights_ok"]
        assert ports.last(outgoing.name).status is EngineStatus.CHECKPOINTED
    last = ports.last(models[0].name).process  # the 20th switch brought "m/a" back
    assert last is not None
    sims.track(last)

    # Every dump went into a fresh image: 10 of "m/a" (its first one after its cold start)
    # and 10 of "m/b"; each restored image was restored once and verified.
    dumped = [name for event, name in images.events if event == "dumped"]
    assert len(dumped) == 20 and sorted(set(dumped), key=int) == [str(n) for n in range(1, 11)]
    assert [e for e, _ in images.events].count("verified") == 19
    # Nothing behind: only the active engine runs, and /dev/shm holds nothing new.
    running = [m for m in pids if supervisor_alive(ports.last(m).process)]
    assert running == [models[0].name]
    assert simulator_pids(sims) == [last.pid]
    assert shm_leftovers() <= shm_before


async def test_with_keep_images_a_restored_engine_is_evicted_to_its_image_without_a_dump(
    sims: SimModels, images: DirectoryImages, criu: Criu
) -> None:
    """keep_images: each model is dumped once; later evictions end the restored engine
    and keep the image it came from, which is restored again and again."""
    images.reuse = True
    ports = sims.ports()
    actions = HostProcessActions(criu=criu, images=images)
    policy = EvictionPolicy.from_label("retain+checkpoint")
    models = [
        sims.target(f"m/{name}", uds=True, eviction=policy, extra_args=WEIGHTS)
        for name in ("a", "b")
    ]
    ok(await switch(ports, actions, models[0]), BringUpKind.COLD_START)
    answers = {models[0].name: answer(models[0])}
    for cycle in range(6):
        incoming, outgoing = models[(cycle + 1) % 2], models[cycle % 2]
        result = await switch(ports, actions, incoming, outgoing)
        ok(result, BringUpKind.COLD_START if cycle == 0 else BringUpKind.RESTORE)
        assert answers.setdefault(incoming.name, answer(incoming)) == answer(incoming)
        assert http_request(incoming.address, "GET", "/sim/state").json()["weights_ok"]
        assert ports.last(outgoing.name).status is EngineStatus.CHECKPOINTED
    sims.track(ports.last(models[0].name).process)  # type: ignore[arg-type]

    events = [event for event, _ in images.events]
    assert events.count("dumped") == 2  # one image per model, made once
    assert sorted(images.restores.values()) == [2, 3]  # each image restored again and again
    assert events.count("reused") == 4  # every later eviction kept the image


def supervisor_alive(process: EngineProcess | None) -> bool:
    return process is not None and processes.is_alive(process)


def simulator_pids(sims: SimModels) -> list[int]:
    """Simulator processes of these tests' models, whoever their parent (orphans too)."""
    root = str(sims.root)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(root in part for part in proc.info["cmdline"] or []):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return sorted(found)


@pytest.mark.parametrize(
    ("gpu_ids", "device_bytes"),
    [((0,), None), ((), 1 << 30)],  # configured GPUs, or "all GPUs" and holding memory
    ids=["gpu_ids", "all-gpus"],
)
async def test_on_a_570_driver_cuda_is_suspended_before_the_dump_and_resumed_after(
    sims: SimModels,
    images: DirectoryImages,
    criu: Criu,
    gpu_ids: tuple[int, ...],
    device_bytes: int | None,
) -> None:
    """Drivers 570-579: CRIU's CUDA plugin cannot checkpoint device memory, llmux does."""
    ports = sims.ports()
    states: dict[int, str] = {}
    actions = HostProcessActions(
        criu=criu,
        images=images,
        suspend=InProcess(stand_in(states)),
        driver_version="575.57.08",
        device_memory=lambda pids: device_bytes,
    )
    policy = EvictionPolicy.from_label("discard+checkpoint")
    a = dataclasses.replace(sims.target("m/a", uds=True, eviction=policy), gpu_ids=gpu_ids)
    b = sims.target("m/b", uds=True)
    ok(await switch(ports, actions, a), BringUpKind.COLD_START)
    pid = ports.last(a.name).process.pid  # type: ignore[union-attr]
    states[pid] = "running"  # its leader holds the CUDA context

    ok(await switch(ports, actions, b, a), BringUpKind.COLD_START)
    sims.track(ports.last(b.name).process)  # type: ignore[arg-type]
    assert states == {pid: "checkpointed"}  # suspended, then dumped with it
    image = images.latest(a)
    assert image is not None and read_meta(image).cuda_mode == "suspend"  # type: ignore[union-attr]

    ok(await switch(ports, actions, a, b), BringUpKind.RESTORE)
    sims.track(ports.last(a.name).process)  # type: ignore[arg-type]
    assert states == {pid: "running"}  # resumed after the restore
    assert answer(a)
