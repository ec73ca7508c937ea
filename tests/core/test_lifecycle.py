"""Engine lifecycle operations (cold start, evict, bring up, readiness) on real simulators."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest

from llmux_site.core import lifecycle, processes, supervisor
from llmux_site.core.engine_client import EngineClient
from llmux_site.core.eviction_policy import EvictionPolicy, ProcessAction, WeightsAction
from llmux_site.core.lifecycle import BringUpError, ReadinessError
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import BringUpKind, EngineStatus, EngineTarget, MemoryCheck
from tests.core.switch_ports import DISCARD, OFFLOAD, STOP, InMemoryPorts, SimModels
from tests.simulator.harness import http_request
from tests.timeouts import ROOMY, hanging

GRACE = 2.0


async def started(models: SimModels, target: EngineTarget) -> EngineTarget:
    """`target` cold-started and recorded as running."""
    process = models.track(await lifecycle.cold_start(target, timeouts=ROOMY))
    return dataclasses.replace(target, status=EngineStatus.RUNNING, process=process)


async def evicted(models: SimModels, ports: InMemoryPorts, target: EngineTarget) -> EngineTarget:
    """A running `target` evicted by its policy, as the next bring-up would read it."""
    outcome = await lifecycle.evict(
        target,
        target.process,
        memory_probe=ports.engine_gpu_memory,
        stop_grace=GRACE,
        timeouts=ROOMY,
    )
    assert not outcome.escalated, outcome.error
    return dataclasses.replace(
        target, status=outcome.status, process=outcome.process, evicted=outcome.evicted
    )


def gone(process: EngineProcess) -> bool:
    return not processes.is_alive(process) and not processes.group_members(process.pgid)


class SignalActions:
    """ProcessActions that "suspend" with SIGSTOP: a real process action without a GPU."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def suspend(self, target: EngineTarget, process: EngineProcess) -> None:
        self.calls.append("suspend")
        os.killpg(process.pgid, signal.SIGSTOP)

    async def resume(self, target: EngineTarget, process: EngineProcess) -> None:
        self.calls.append("resume")
        os.killpg(process.pgid, signal.SIGCONT)

    async def checkpoint(self, target: EngineTarget, process: EngineProcess) -> None:
        raise NotImplementedError

    async def has_image(self, target: EngineTarget) -> bool:
        return False

    async def restore(self, target: EngineTarget) -> lifecycle.Restored:
        raise NotImplementedError

    async def restore_verified(self, target: EngineTarget) -> None:
        raise NotImplementedError


# --- cold start ------------------------------------------------------------------------


async def test_cold_start_reports_the_identity_before_the_engine_is_healthy(
    models: SimModels,
) -> None:
    target = models.target("m/cold", "start-delay=0.3")
    seen: list[tuple[EngineProcess, bool]] = []

    async def on_spawned(process: EngineProcess) -> None:
        models.track(process)
        async with EngineClient(target.address, retries=0) as client:
            seen.append((process, await client.health()))

    process = await lifecycle.cold_start(target, timeouts=ROOMY, on_spawned=on_spawned)

    assert seen == [(process, False)]
    async with EngineClient(target.address) as client:
        assert await client.health() is True


async def test_cold_start_of_a_crashing_engine_raises_with_the_log_tail(
    models: SimModels,
) -> None:
    target = models.target("m/crash", "crash=startup")
    spawned: list[EngineProcess] = []

    async def on_spawned(process: EngineProcess) -> None:
        spawned.append(models.track(process))

    with pytest.raises(BringUpError) as raised:
        await lifecycle.cold_start(target, timeouts=ROOMY, on_spawned=on_spawned)

    assert "crash" in raised.value.log_tail
    assert "cold start of m/crash failed" in str(raised.value)
    assert gone(spawned[0])


async def test_a_cold_start_refused_by_the_platform_says_why(models: SimModels) -> None:
    # The simulator playing vLLM's CPU build, given --enable-sleep-mode: it exits at start.
    target = models.target("m/cpu-sleep", extra_args=["--sim-platform", "cpu"])

    with pytest.raises(BringUpError) as raised:
        await lifecycle.cold_start(target, timeouts=ROOMY)

    assert raised.value.log_tail.splitlines()[-1] == (
        "ValueError: Sleep mode is not supported on current platform."
    )


async def test_cold_start_past_the_startup_timeout_stops_the_group(models: SimModels) -> None:
    target = models.target(
        "m/slow", "start-delay=30", extra_args=["--sim-child-processes", "1"], startup_timeout=0.5
    )
    spawned: list[EngineProcess] = []

    async def on_spawned(process: EngineProcess) -> None:
        spawned.append(models.track(process))

    with pytest.raises(BringUpError, match=r"not healthy after 0\.5 s"):
        await lifecycle.cold_start(target, timeouts=ROOMY, on_spawned=on_spawned)
    assert gone(spawned[0])


# --- evict -----------------------------------------------------------------------------


async def test_offload_frees_the_gpu_and_wake_brings_the_same_process_back(
    models: SimModels, ports: InMemoryPorts
) -> None:
    running = await started(models, models.target("m/offload", eviction=OFFLOAD))
    assert running.process is not None
    held = ports.engine_gpu_memory([running.process.pid])

    sleeping = await evicted(models, ports, running)

    assert (sleeping.status, sleeping.process, sleeping.evicted) == (
        EngineStatus.SLEEPING,
        running.process,
        OFFLOAD,
    )
    assert held and ports.engine_gpu_memory([running.process.pid]) == 0
    kind, process = await lifecycle.bring_up(sleeping, timeouts=ROOMY)
    assert (kind, process) == (BringUpKind.WAKE, running.process)
    await lifecycle.readiness(sleeping, process, timeouts=ROOMY)
    assert ports.engine_gpu_memory([process.pid]) == held


async def test_stop_policy_stops_the_whole_group(models: SimModels, ports: InMemoryPorts) -> None:
    target = models.target("m/stop", eviction=STOP, extra_args=["--sim-child-processes", "2"])
    running = await started(models, target)
    assert running.process is not None
    assert len(lifecycle.engine_pids(running.process)) == 3

    stopped = await evicted(models, ports, running)

    assert (stopped.status, stopped.process, stopped.evicted) == (EngineStatus.STOPPED, None, STOP)
    assert gone(running.process)


def no_probe(pids: object) -> None:
    """A host where no GPU probe applies (vLLM's CPU build, no NVML)."""
    return None


@pytest.mark.parametrize(
    ("eviction", "probe", "check"),
    [
        (OFFLOAD, "ledger", MemoryCheck.FREED),
        (OFFLOAD, "none", MemoryCheck.UNKNOWN),  # it lives on: nothing was verified
        (STOP, "none", MemoryCheck.EXITED),  # its processes are gone: they hold nothing
    ],
)
async def test_an_eviction_says_how_it_knows_the_gpu_memory_came_back(
    models: SimModels,
    ports: InMemoryPorts,
    eviction: EvictionPolicy,
    probe: str,
    check: MemoryCheck,
) -> None:
    running = await started(models, models.target(f"m/{probe}", eviction=eviction))
    assert running.process is not None

    outcome = await lifecycle.evict(
        running,
        running.process,
        memory_probe=ports.engine_gpu_memory if probe == "ledger" else no_probe,
        stop_grace=GRACE,
        timeouts=ROOMY,
    )

    assert not outcome.escalated, outcome.error
    assert outcome.memory_check is check


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("sleep=fail", "HTTP 500"),
        ("sleep=hang", "EngineTimeout"),
        ("sleep=noop", "GPU memory was not freed"),
    ],
)
async def test_a_failed_sleep_escalates_to_stop(
    models: SimModels, ports: InMemoryPorts, fault: str, reason: str
) -> None:
    running = await started(models, models.target("m/faulty", fault))
    assert running.process is not None

    outcome = await lifecycle.evict(
        running,
        running.process,
        memory_probe=ports.engine_gpu_memory,
        stop_grace=GRACE,
        timeouts=hanging(sleep=1),
    )

    assert outcome.escalated and outcome.evicted == lifecycle.STOPPED_POLICY
    assert (outcome.status, outcome.process) == (EngineStatus.STOPPED, None)
    assert reason in outcome.error and "offload+keep_running" in outcome.error
    assert gone(running.process)


def without_sleep_mode(target: EngineTarget) -> EngineTarget:
    """`target` started as llmux starts an engine whose platform has no sleep mode."""
    argv = [arg for arg in target.spec.argv if arg != "--enable-sleep-mode"]
    return dataclasses.replace(target, spec=dataclasses.replace(target.spec, argv=argv))


@pytest.mark.parametrize("eviction", [OFFLOAD, DISCARD])
async def test_an_eviction_that_sleeps_stops_an_engine_without_sleep_mode_saying_why(
    models: SimModels, ports: InMemoryPorts, eviction: EvictionPolicy
) -> None:
    target = without_sleep_mode(
        models.target("m/cpu", eviction=eviction, extra_args=["--sim-platform", "cpu"])
    )
    running = await started(models, target)
    assert running.process is not None

    outcome = await lifecycle.evict(
        running,
        running.process,
        memory_probe=ports.engine_gpu_memory,
        stop_grace=GRACE,
        timeouts=ROOMY,
    )

    assert (outcome.escalated, outcome.status, outcome.evicted) == (
        True,
        EngineStatus.STOPPED,
        lifecycle.STOPPED_POLICY,
    )
    assert f"by {eviction.label} failed: SleepModeUnavailable" in outcome.error
    assert "runs without vLLM sleep mode" in outcome.error
    assert gone(running.process)


async def test_cuda_suspend_without_process_actions_escalates_with_a_clear_error(
    models: SimModels, ports: InMemoryPorts
) -> None:
    policy = EvictionPolicy.from_sleep_level(3)
    running = await started(models, models.target("m/suspend", eviction=policy))
    assert running.process is not None

    outcome = await lifecycle.evict(
        running, running.process, memory_probe=ports.engine_gpu_memory, stop_grace=GRACE
    )

    assert outcome.escalated
    assert "cuda_suspend is not available on this host" in outcome.error
    assert gone(running.process)


async def test_process_actions_suspend_and_resume_around_the_weights(
    models: SimModels, ports: InMemoryPorts
) -> None:
    policy = EvictionPolicy.from_label("offload+cuda_suspend")
    running = await started(models, models.target("m/sigstop", eviction=policy))
    actions = SignalActions()

    outcome = await lifecycle.evict(
        running,
        running.process,
        memory_probe=ports.engine_gpu_memory,
        stop_grace=GRACE,
        timeouts=ROOMY,
        process_actions=actions,
    )
    assert (outcome.status, outcome.process, outcome.escalated) == (
        EngineStatus.SUSPENDED,
        running.process,
        False,
    )
    suspended = dataclasses.replace(running, status=outcome.status, evicted=outcome.evicted)
    kind, process = await lifecycle.bring_up(suspended, timeouts=ROOMY, process_actions=actions)

    assert (kind, process) == (BringUpKind.RESUME, running.process)
    assert actions.calls == ["suspend", "resume"]
    await lifecycle.readiness(suspended, process, timeouts=ROOMY)


async def test_evicting_a_dead_engine_reports_it_stopped(
    models: SimModels, ports: InMemoryPorts
) -> None:
    running = await started(models, models.target("m/dead"))
    assert running.process is not None
    supervisor.stop(running.process, grace=GRACE)

    outcome = await lifecycle.evict(
        running, running.process, memory_probe=ports.engine_gpu_memory, stop_grace=GRACE
    )

    assert (outcome.status, outcome.escalated, outcome.process) == (
        EngineStatus.STOPPED,
        False,
        None,
    )


# --- bring up and readiness ------------------------------------------------------------


async def test_a_dead_sleeping_engine_is_cold_started_not_woken(
    models: SimModels, ports: InMemoryPorts
) -> None:
    sleeping = await evicted(models, ports, await started(models, models.target("m/gone")))
    assert sleeping.process is not None
    os.killpg(sleeping.process.pgid, signal.SIGKILL)
    await supervisor.wait_exit(sleeping.process)

    kind, process = await lifecycle.bring_up(sleeping, timeouts=ROOMY)
    models.track(process)

    assert kind is BringUpKind.COLD_START and process.pid != sleeping.process.pid
    await lifecycle.readiness(sleeping, process, timeouts=ROOMY)


async def test_level_two_wake_reloads_the_weights(models: SimModels, ports: InMemoryPorts) -> None:
    running = await started(models, models.target("m/discard", eviction=DISCARD))
    async with EngineClient(running.address) as client:
        before = await client.probe(running.served_name)
    sleeping = await evicted(models, ports, running)

    kind, _ = await lifecycle.bring_up(sleeping, timeouts=ROOMY)

    assert kind is BringUpKind.WAKE
    async with EngineClient(running.address) as client:
        assert (await client.probe(running.served_name)).text == before.text
    state = http_request(running.address, "GET", "/sim/state").json()
    assert (state["weights_ok"], state["reload_count"]) == (True, 1)


async def test_a_resume_without_process_actions_fails_clearly(models: SimModels) -> None:
    running = await started(models, models.target("m/noactions"))
    assert running.process is not None
    target = dataclasses.replace(running, status=EngineStatus.SUSPENDED, evicted=STOP)

    with pytest.raises(BringUpError, match="cuda_suspend is not available on this host"):
        await lifecycle.bring_up(target, timeouts=ROOMY)
    assert gone(running.process)


async def test_a_restore_without_process_actions_cold_starts_and_says_why(
    models: SimModels,
) -> None:
    checkpointed = dataclasses.replace(
        models.target("m/nocriu"), status=EngineStatus.CHECKPOINTED, evicted=STOP
    )
    heard: list[str] = []

    kind, process = await lifecycle.bring_up(checkpointed, timeouts=ROOMY, on_fallback=heard.append)
    models.track(process)
    assert kind is BringUpKind.COLD_START and processes.is_alive(process)
    assert len(heard) == 1 and "checkpoint is not available on this host" in heard[0]


async def test_a_failed_wake_stops_the_engine(models: SimModels, ports: InMemoryPorts) -> None:
    sleeping = await evicted(
        models, ports, await started(models, models.target("m/w", "wake=fail"))
    )
    assert sleeping.process is not None

    with pytest.raises(BringUpError, match=r"wake of m/w failed: .*HTTP 500"):
        await lifecycle.bring_up(sleeping, timeouts=ROOMY)
    assert gone(sleeping.process)


async def test_a_decode_stall_fails_readiness_and_stops_the_engine(models: SimModels) -> None:
    running = await started(models, models.target("m/stall", "decode=stall"))
    assert running.process is not None

    heard: list[str] = []

    async def healthy() -> None:
        heard.append("healthy")

    with pytest.raises(ReadinessError, match="EngineTimeout"):
        await lifecycle.readiness(
            running, running.process, timeouts=hanging(probe=1), on_healthy=healthy
        )
    assert gone(running.process)
    assert heard == ["healthy"]  # /health answered: the stall is the probe's


async def test_readiness_says_healthy_before_the_probe_and_not_when_health_fails(
    models: SimModels,
) -> None:
    running = await started(models, models.target("m/probe"))
    assert running.process is not None
    order: list[str] = []

    def completions(target: EngineTarget) -> int:
        state = http_request(target.address, "GET", "/sim/state").json()
        return int(state["requests"].get("/v1/completions", 0))

    async def healthy() -> None:
        order.append(f"healthy after {completions(running)} completions")

    await lifecycle.readiness(running, running.process, timeouts=ROOMY, on_healthy=healthy)
    assert order == ["healthy after 0 completions"]
    assert completions(running) == 1  # then the one-token probe

    order.clear()
    http_request(running.address, "POST", "/sim/faults", {"faults": ["health=fail"]})
    with pytest.raises(ReadinessError):
        await lifecycle.readiness(running, running.process, timeouts=ROOMY, on_healthy=healthy)
    assert order == []
    assert gone(running.process)


async def test_a_tensor_parallel_engine_suspends_nccl_around_a_cuda_suspend(
    models: SimModels, ports: InMemoryPorts
) -> None:
    """vLLM tears NCCL down before the driver checkpoint and builds it again after."""
    policy = EvictionPolicy(WeightsAction.OFFLOAD, ProcessAction.CUDA_SUSPEND)
    target = models.target("m/tp", eviction=policy, extra_args=["--tensor-parallel-size", "2"])
    running = await started(models, target)
    actions = SignalActions()
    seen: list[bool] = []
    suspend = actions.suspend

    async def suspend_seeing_nccl(target: EngineTarget, process: EngineProcess) -> None:
        seen.append(http_request(target.address, "GET", "/sim/state").json()["nccl_suspended"])
        await suspend(target, process)

    actions.suspend = suspend_seeing_nccl  # type: ignore[method-assign]
    outcome = await lifecycle.evict(
        running,
        running.process,
        memory_probe=ports.engine_gpu_memory,
        stop_grace=GRACE,
        timeouts=ROOMY,
        process_actions=actions,
    )
    assert outcome.status is EngineStatus.SUSPENDED and seen == [True]
    suspended = dataclasses.replace(
        running, status=outcome.status, process=outcome.process, evicted=outcome.evicted
    )
    kind, _ = await lifecycle.bring_up(suspended, timeouts=ROOMY, process_actions=actions)
    assert kind is BringUpKind.RESUME and actions.calls == ["suspend", "resume"]
    assert http_request(target.address, "GET", "/sim/state").json()["nccl_suspended"] is False
