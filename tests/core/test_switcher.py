"""The switch executor against real simulator processes; only `SwitchPorts` is in memory."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from llmux_site.core import processes, supervisor
from llmux_site.core.engine_client import CallTimeouts, EngineClient
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.lifecycle import STOPPED_POLICY
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switcher import run_switch
from llmux_site.core.switching import (
    BringUpKind,
    EngineChange,
    EngineStatus,
    EngineTarget,
    Outcome,
    Phase,
    SwitchPlan,
    SwitchResult,
)
from tests.core.switch_ports import DISCARD, OFFLOAD, InMemoryPorts, SimModels
from tests.simulator.harness import http_request
from tests.timeouts import ROOMY, hanging

GRACE = 2.0
PROMPT = "tell me about the weights"
ALL_PHASES = [
    Phase.BACKOFF,
    Phase.CHECK,
    Phase.COOLDOWN,
    Phase.DRAIN,
    Phase.EVICT,
    Phase.BRINGUP,
    Phase.READINESS,
    Phase.SETTLE,
]


async def switch(
    ports: InMemoryPorts,
    incoming: EngineTarget,
    outgoing: EngineTarget | None = None,
    timeouts: CallTimeouts = ROOMY,
    **options: Any,
) -> SwitchResult:
    """Switch to `incoming` (someone waits for it), both read back from the ports' records."""
    ports.waiting_for.setdefault(incoming.name, 1)
    # The simulated engines hold 512 KiB; the default 64 MiB tolerance would hide a no-op.
    options.setdefault("memory_tolerance_bytes", 64 * 1024)
    plan = SwitchPlan(
        group="gpu0",
        incoming=ports.target(incoming),
        outgoing=ports.target(outgoing) if outgoing else None,
        stop_grace=GRACE,
        settle_timeout=0.1,
        **options,
    )
    return await run_switch(plan, ports, timeouts=timeouts)


async def complete(target: EngineTarget, prompt: str = PROMPT, max_tokens: int = 8) -> str:
    async with EngineClient(target.address) as client:
        answer = await client.completion(
            {
                "model": target.served_name,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0,
            }
        )
    return str(answer["choices"][0]["text"])


async def probe_text(target: EngineTarget) -> str:
    async with EngineClient(target.address) as client:
        return (await client.probe(target.served_name)).text


def process_of(ports: InMemoryPorts, target: EngineTarget) -> EngineProcess:
    process = ports.last(target.name).process
    assert process is not None
    return process


def gone(process: EngineProcess) -> bool:
    return not processes.is_alive(process) and not processes.group_members(process.pgid)


def assert_succeeded(result: SwitchResult, bringup: BringUpKind) -> None:
    assert (result.outcome, result.bringup, result.error) == (Outcome.SUCCEEDED, bringup, "")


# --- the happy paths -------------------------------------------------------------------


async def test_the_first_model_is_cold_started(models: SimModels, ports: InMemoryPorts) -> None:
    a = models.target("m/a")

    result = await switch(ports, a)

    assert_succeeded(result, BringUpKind.COLD_START)
    assert ports.statuses(a.name) == [EngineStatus.STARTING, EngineStatus.RUNNING]
    assert result.incoming_process == process_of(ports, a)
    assert ports.phase_names() == [
        Phase.BACKOFF,
        Phase.CHECK,
        Phase.BRINGUP,
        Phase.READINESS,
        Phase.SETTLE,
    ]
    assert set(result.durations_ms) == set(ports.phase_names())
    assert ports.settled == [(a.name, 0.1)]
    assert ports.probed == [a.name]  # web processes heard it passed /health, once
    assert set(ports.holders()) == {a.name}
    assert result.memory_before == {} and sum(result.memory_after.values()) > 0


async def test_a_round_trip_keeps_the_content_and_one_model_on_the_gpu(
    models: SimModels, ports: InMemoryPorts
) -> None:
    a, b, c = models.target("m/a"), models.target("m/b", eviction=DISCARD), models.target("m/c")
    assert_succeeded(await switch(ports, a), BringUpKind.COLD_START)
    first_process = process_of(ports, a)
    texts = {a.name: await complete(a)}

    for incoming, outgoing, kind in [
        (b, a, BringUpKind.COLD_START),
        (c, b, BringUpKind.COLD_START),
        (a, c, BringUpKind.WAKE),
        (b, a, BringUpKind.WAKE),
    ]:
        result = await switch(ports, incoming, outgoing)
        assert_succeeded(result, kind)
        assert set(ports.holders()) == {incoming.name}, f"after switching to {incoming.name}"
        assert ports.last(outgoing.name).status is EngineStatus.SLEEPING
        assert result.durations_ms[Phase.EVICT] > 0
        texts.setdefault(incoming.name, await complete(incoming))

    await switch(ports, a, b)
    assert process_of(ports, a) == first_process
    assert await complete(a) == texts[a.name]
    assert len(set(texts.values())) == 3  # each model's weights give its own answer
    assert await probe_text(a) == await complete(a, "ping", max_tokens=1)
    assert ports.phase_names()[-8:] == ALL_PHASES


async def test_a_switch_to_the_active_model_changes_nothing(
    models: SimModels, ports: InMemoryPorts
) -> None:
    a = models.target("m/a")
    await switch(ports, a)
    changes = list(ports.changes)

    result = await switch(ports, a)
    same_as_outgoing = await switch(ports, a, a)

    assert_succeeded(result, BringUpKind.ALREADY_ACTIVE)
    assert_succeeded(same_as_outgoing, BringUpKind.ALREADY_ACTIVE)
    assert result.incoming_process == process_of(ports, a)
    assert ports.changes == changes


async def test_a_level_two_wake_reloads_the_weights(
    models: SimModels, ports: InMemoryPorts
) -> None:
    a, b = models.target("m/a", eviction=DISCARD), models.target("m/b")
    await switch(ports, a)
    before = await probe_text(a), await complete(a)
    await switch(ports, b, a)
    assert ports.last(a.name).evicted == DISCARD

    assert_succeeded(await switch(ports, a, b), BringUpKind.WAKE)

    assert (await probe_text(a), await complete(a)) == before
    state = http_request(a.address, "GET", "/sim/state").json()
    assert (state["weights_ok"], state["reload_count"]) == (True, 1)


# --- eviction failures escalate --------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "eviction", "reason"),
    [
        (("sleep=fail",), None, "HTTP 500"),
        (("sleep=noop",), None, "GPU memory was not freed"),
        (("sleep=hang",), None, "EngineTimeout"),
        ((), EvictionPolicy.from_sleep_level(3), "cuda_suspend is not available on this host"),
    ],
    ids=["sleep-fails", "sleep-frees-nothing", "sleep-hangs", "no-cuda-suspend"],
)
async def test_a_failed_eviction_escalates_to_stop_and_the_switch_succeeds(
    models: SimModels,
    ports: InMemoryPorts,
    faults: tuple[str, ...],
    eviction: EvictionPolicy | None,
    reason: str,
) -> None:
    a = models.target("m/a", *faults, eviction=eviction or OFFLOAD)
    b = models.target("m/b")
    await switch(ports, a)
    a_process = process_of(ports, a)

    result = await switch(ports, b, a, timeouts=hanging(sleep=1))

    assert (result.outcome, result.bringup, result.escalated) == (
        Outcome.SUCCEEDED,
        BringUpKind.COLD_START,
        True,
    )
    assert reason in result.error
    assert ports.last(a.name) == EngineChange(
        a.name, EngineStatus.STOPPED, None, STOPPED_POLICY, result.error
    )
    assert gone(a_process)
    assert set(ports.holders()) == {b.name}
    assert_succeeded(await switch(ports, a, b), BringUpKind.COLD_START)


# --- drain, cooldown, backoff, skip ----------------------------------------------------


async def test_the_drain_waits_for_in_flight_requests(
    models: SimModels, ports: InMemoryPorts
) -> None:
    a, b = models.target("m/a"), models.target("m/b")
    await switch(ports, a)
    await ports.start_request(a.name)

    running = asyncio.create_task(switch(ports, b, a))
    await asyncio.sleep(0.3)
    assert a.name in ports.draining and not running.done()
    assert ports.last(a.name).status is EngineStatus.DRAINING
    await ports.finish_request(a.name)
    result = await running

    assert_succeeded(result, BringUpKind.COLD_START)
    assert result.forced_drain is False
    assert result.durations_ms[Phase.DRAIN] >= 250


async def test_a_drain_timeout_forces_the_eviction(models: SimModels, ports: InMemoryPorts) -> None:
    a, b = models.target("m/a", drain_timeout=0.2), models.target("m/b")
    await switch(ports, a)
    await ports.start_request(a.name)  # never finishes

    result = await switch(ports, b, a)

    assert_succeeded(result, BringUpKind.COLD_START)
    assert result.forced_drain is True
    assert ports.last(a.name).status is EngineStatus.SLEEPING


async def test_the_outgoing_model_keeps_the_gpu_for_its_minimum_active_time(
    models: SimModels, ports: InMemoryPorts
) -> None:
    a, b = models.target("m/a"), models.target("m/b")
    await switch(ports, a)

    result = await switch(ports, b, a, min_active_secs=0.6)
    forced = await switch(ports, a, b, min_active_secs=60, force=True)

    assert_succeeded(result, BringUpKind.COLD_START)
    assert result.durations_ms[Phase.COOLDOWN] >= 400
    assert len(ports.slept) == 1 and 0.4 < ports.slept[0] <= 0.6
    assert_succeeded(forced, BringUpKind.WAKE)
    assert Phase.COOLDOWN not in forced.durations_ms


async def test_a_stale_switch_is_skipped_after_the_backoff(
    models: SimModels, ports: InMemoryPorts
) -> None:
    a = models.target("m/a")
    plan = SwitchPlan(group="gpu0", incoming=a, outgoing=None, backoff_until=ports.now() + 0.3)

    result = await run_switch(plan, ports, timeouts=ROOMY)

    assert result.outcome is Outcome.SKIPPED
    assert ports.phase_names() == [Phase.BACKOFF, Phase.CHECK]
    assert result.durations_ms[Phase.BACKOFF] >= 250 and ports.changes == []
    assert ports.holders() == {}


# --- bring-up failures -----------------------------------------------------------------


@pytest.mark.parametrize("fault", ["wake=fail", "crash=wake"])
async def test_a_failed_wake_cleans_up_and_a_later_switch_cold_starts(
    models: SimModels, ports: InMemoryPorts, fault: str
) -> None:
    a, b = models.target("m/a", fault), models.target("m/b")
    await switch(ports, a)
    await switch(ports, b, a)
    a_process = process_of(ports, a)

    failed = await switch(ports, a, b)

    assert (failed.outcome, failed.bringup) == (Outcome.FAILED, None)
    assert "wake of m/a failed" in failed.error
    assert ports.probed == [a.name, b.name]  # not for the wake that failed
    last = ports.last(a.name)
    assert (last.status, last.process, last.error) == (EngineStatus.FAILED, None, failed.error)
    assert gone(a_process)
    assert ports.holders() == {}
    assert_succeeded(await switch(ports, a), BringUpKind.COLD_START)
    assert set(ports.holders()) == {a.name}


async def test_a_dead_sleeping_engine_is_cold_started_instead_of_woken(
    models: SimModels, ports: InMemoryPorts
) -> None:
    a, b = models.target("m/a"), models.target("m/b")
    await switch(ports, a)
    text = await complete(a)
    await switch(ports, b, a)
    dead = process_of(ports, a)
    os.killpg(dead.pgid, signal.SIGKILL)
    await supervisor.wait_exit(dead)

    result = await switch(ports, a, b)

    assert_succeeded(result, BringUpKind.COLD_START)
    assert result.incoming_process is not None and result.incoming_process.pid != dead.pid
    assert await complete(a) == text


async def test_a_decode_stall_fails_readiness(models: SimModels, ports: InMemoryPorts) -> None:
    a, b = models.target("m/a"), models.target("m/b", "decode=stall")
    await switch(ports, a)

    result = await switch(ports, b, a, timeouts=hanging(probe=1))

    assert result.outcome is Outcome.FAILED and "readiness of m/b failed" in result.error
    assert Phase.READINESS in result.durations_ms
    stalled = [c.process for c in ports.changes if c.model == b.name and c.process]
    assert stalled and all(gone(process) for process in stalled)
    assert ports.last(b.name).status is EngineStatus.FAILED
    assert ports.holders() == {}


# --- cancellation and SystemExit -------------------------------------------------------


async def test_cancelling_a_cold_start_kills_the_new_engine(
    models: SimModels, ports: InMemoryPorts
) -> None:
    a = models.target("m/a", "start-delay=30")
    recorded = asyncio.Event()

    async def on_change(change: EngineChange) -> None:
        if change.status is EngineStatus.STARTING:
            recorded.set()

    ports.on_change = on_change
    running = asyncio.create_task(switch(ports, a))
    await asyncio.wait_for(recorded.wait(), timeout=10)
    running.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running
    assert gone(process_of(ports, a))


async def test_system_exit_during_readiness_kills_the_new_engine_then_propagates(
    models: SimModels, ports: InMemoryPorts
) -> None:
    a = models.target("m/a")

    async def on_phase(phase: Phase, elapsed_ms: float | None) -> None:
        if phase is Phase.READINESS and elapsed_ms is None:
            raise SystemExit("django-q task timeout")

    ports.on_phase = on_phase

    with pytest.raises(SystemExit):
        await switch(ports, a)
    assert ports.statuses(a.name) == [EngineStatus.STARTING]
    assert gone(process_of(ports, a))
