"""Engine operations on one model: cold start, evict, bring up and readiness.

Pure core: no Django. Each operation works on one `EngineTarget` against its real process
(supervisor) and HTTP surface (engine client), and returns plain data; the switcher decides
what to record. Failures leave no half-state behind: a failed eviction escalates to a stop,
and a failed bring-up or readiness stops the target's process group, so a later switch can
always cold-start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from llmux_site.core import processes, supervisor
from llmux_site.core.addresses import ListenAddress
from llmux_site.core.engine_client import CallTimeouts, EngineClient, open_session
from llmux_site.core.engine_files import remove_engine_files
from llmux_site.core.engine_log import read_failure_cause
from llmux_site.core.eviction_checks import (
    MEMORY_LEFT_RATIO,
    SleepModeUnavailable,
    check_sleep_mode,
    verify_memory,
)
from llmux_site.core.eviction_policy import EvictionPolicy, ProcessAction, WeightsAction
from llmux_site.core.launch import tensor_parallel_size
from llmux_site.core.processes import EngineProcess, SupervisorError, live_process, process_tree
from llmux_site.core.readiness import run_probe
from llmux_site.core.switching import BringUpKind, EngineStatus, EngineTarget, MemoryCheck

__all__ = [
    "MEMORY_LEFT_RATIO",
    "STOPPED_POLICY",
    "BringUpError",
    "EngineMemoryProbe",
    "EvictOutcome",
    "EvictionBaseline",
    "EvictionError",
    "LifecycleError",
    "OnSpawned",
    "ProcessActionUnavailable",
    "ProcessActions",
    "ReadinessError",
    "Restored",
    "SleepModeUnavailable",
    "bring_up",
    "bring_up_kind",
    "cold_start",
    "engine_pids",
    "evict",
    "eviction_baseline",
    "kill_now",
    "readiness",
    "shared_sessions",
    "stop_engine",
]

logger = logging.getLogger(__name__)

# What an engine counts as evicted by after an escalation: weights kept, process stopped.
STOPPED_POLICY = EvictionPolicy(WeightsAction.RETAIN, ProcessAction.STOP)
STARTUP_POLL_INTERVAL = 0.1
DEFAULT_STOP_GRACE = 10.0

EngineMemoryProbe = Callable[[Sequence[int]], int | None]
OnSpawned = Callable[[EngineProcess], Awaitable[None]]


class LifecycleError(Exception):
    """An engine operation failed; `log_tail` holds what the engine's log gives as the cause
    (its first traceback or error, engine_log.failure_cause) if known."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        if log_tail and log_tail not in message:
            message = f"{message}; the engine's log says:\n{log_tail}"
        super().__init__(message)
        self.log_tail = log_tail


class BringUpError(LifecycleError):
    """The target could not be brought up; its process group has been stopped."""


class ReadinessError(LifecycleError):
    """The target came up but did not pass health and probe; its group has been stopped."""


class EvictionError(LifecycleError):
    """Even the escalation to stop failed: the outgoing engine may still hold the GPU."""


class ProcessActionUnavailable(LifecycleError):
    """A process action (cuda_suspend, checkpoint) this host cannot perform."""


class ProcessActions(Protocol):
    """CUDA suspend and CRIU checkpoint drivers; absent where the host cannot do them."""

    async def suspend(self, target: EngineTarget, process: EngineProcess) -> None:
        """Move the engine tree's device memory to the host; the process keeps running."""

    async def resume(self, target: EngineTarget, process: EngineProcess) -> None:
        """Undo `suspend`: device memory back on the GPU."""

    async def checkpoint(self, target: EngineTarget, process: EngineProcess) -> None:
        """Dump the engine tree to an image; the process is gone afterwards."""

    async def has_image(self, target: EngineTarget) -> bool:
        """Whether a usable image of `target` (same launch spec) is there to restore."""

    async def restore(self, target: EngineTarget) -> Restored:
        """Restore the target's latest image; the restored process (new create time)."""

    async def restore_verified(self, target: EngineTarget) -> None:
        """The engine restored last for `target` passed its readiness probe."""


@dataclass(frozen=True, slots=True)
class Restored:
    """A restored engine, and how its weights were evicted before the image was taken
    (which is what bring-up must undo, whatever the runtime record says)."""

    process: EngineProcess
    weights: WeightsAction | None = None


@dataclass(frozen=True, slots=True)
class EvictionBaseline:
    """The engine tree's pids and the GPU memory they hold, taken before an eviction."""

    pids: list[int]
    held: int | None


@dataclass(frozen=True, slots=True)
class EvictOutcome:
    """How an eviction ended, and what to record for the outgoing engine."""

    evicted: EvictionPolicy | None
    escalated: bool = False
    error: str = ""  # why it escalated (empty when the policy worked)
    status: EngineStatus = EngineStatus.STOPPED
    process: EngineProcess | None = None  # the process still alive after the eviction
    memory_check: MemoryCheck = MemoryCheck.NONE  # how the freed GPU memory is known


# --- helpers ---------------------------------------------------------------------------


# Engine sessions shared by the calls of one switch (see `shared_sessions`).
_shared: ContextVar[dict[ListenAddress, aiohttp.ClientSession] | None] = ContextVar(
    "llmux_engine_sessions", default=None
)


@contextlib.asynccontextmanager
async def shared_sessions() -> AsyncIterator[None]:
    """Inside, engine calls reuse one connection pool per engine; closed on the way out.

    A switch talks to each engine several times in a row (sleep and /is_sleeping; wake,
    /is_sleeping, /health and the probe): one connection instead of one per step.
    """
    sessions: dict[ListenAddress, aiohttp.ClientSession] = {}
    token = _shared.set(sessions)
    try:
        yield
    finally:
        _shared.reset(token)
        for session in sessions.values():
            await session.close()


def _client(target: EngineTarget, timeouts: CallTimeouts | None, retries: int = 2) -> EngineClient:
    sessions = _shared.get()
    session = None
    if sessions is not None:
        session = sessions.get(target.address)
        if session is None or session.closed:
            session = sessions[target.address] = open_session(target.address)
    return EngineClient(target.address, timeouts=timeouts, retries=retries, session=session)


def _live(process: EngineProcess | None) -> EngineProcess | None:
    return process if process is not None and processes.is_alive(process) else None


def engine_pids(process: EngineProcess) -> list[int]:
    """Pids of the engine tree: the leader, its process group and its descendants."""
    # One pass over /proc (psutil's recursive children would be a second one).
    leader = live_process(process.pid, process.create_time)
    pgid = process.pgid if process.pgid != os.getpgrp() else 0
    return process_tree(process.pid if leader is not None else 0, pgid)


# Engine trees seen recently: (pid, create time) -> (when, pids). vLLM starts its workers
# at start-up and keeps them, so a tree younger than this is reused while all its pids
# still exist, instead of scanning /proc again (a rapid alternation evicts every second).
TREE_MAX_AGE = 10.0
_trees: dict[tuple[int, float], tuple[float, list[int]]] = {}


def _known_tree(process: EngineProcess) -> list[int]:
    key = (process.pid, process.create_time)
    now = time.monotonic()
    cached = _trees.get(key)
    fresh = cached is not None and now - cached[0] < TREE_MAX_AGE
    if cached and fresh and all(os.path.exists(f"/proc/{pid}") for pid in cached[1]):
        return cached[1]
    pids = engine_pids(process)
    for stale in [k for k, (at, _) in _trees.items() if now - at >= TREE_MAX_AGE]:
        del _trees[stale]
    _trees[key] = (now, pids)
    return pids


def eviction_baseline(process: EngineProcess, memory_probe: EngineMemoryProbe) -> EvictionBaseline:
    """What `evict` compares against afterwards: the engine tree and what it holds."""
    pids = _known_tree(process)
    return EvictionBaseline(pids, memory_probe(pids))


async def _stop_group(process: EngineProcess, grace: float) -> str:
    """Stop the engine's group; '' or why stopping failed (never raises SupervisorError)."""
    try:
        await supervisor.stop_async(process, grace=grace)
    except SupervisorError as exc:
        logger.error("stopping engine group %s failed: %s", process.pgid, exc)
        return str(exc)
    return ""


async def stop_engine(target: EngineTarget, process: EngineProcess, grace: float) -> str:
    """Stop the target's engine and remove the files it leaves (its socket, its TMPDIR);
    '' or why stopping failed (never raises SupervisorError)."""
    failure = await _stop_group(process, grace)
    if not failure:
        remove_engine_files(tmp_dir=target.spec.tmp_dir, uds=target.spec.uds)
    return failure


def kill_now(process: EngineProcess, grace: float) -> None:
    """Stop the group without the event loop: for cancellation and SystemExit paths."""
    try:
        supervisor.stop(process, grace=grace)
    except SupervisorError as exc:
        logger.error("killing engine group %s failed: %s", process.pgid, exc)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- cold start ------------------------------------------------------------------------


async def cold_start(
    target: EngineTarget,
    *,
    timeouts: CallTimeouts | None = None,
    stop_grace: float = DEFAULT_STOP_GRACE,
    on_spawned: OnSpawned | None = None,
) -> EngineProcess:
    """Spawn `target.spec` and wait until /health answers, within `target.startup_timeout`.

    `on_spawned` hears the new identity before the health wait, so it can be recorded
    before anything can crash. On failure the whole group is stopped and BringUpError
    (with the log tail) raised; on cancellation or SystemExit it is killed, then re-raised.
    """
    try:
        process = processes.spawn(target.spec)
    except SupervisorError as exc:
        raise BringUpError(f"cold start of {target.name} failed: {exc}") from exc
    try:
        if on_spawned is not None:
            await on_spawned(process)
        async with _client(target, timeouts, retries=0) as client:
            await supervisor.wait_healthy(
                process,
                client.health,
                timeout=target.startup_timeout,
                interval=STARTUP_POLL_INTERVAL,
            )
    except Exception as exc:
        await stop_engine(target, process, stop_grace)
        tail = read_failure_cause(process.log_path)
        raise BringUpError(f"cold start of {target.name} failed: {exc}", log_tail=tail) from exc
    except BaseException:
        kill_now(process, stop_grace)
        raise
    return process


# --- eviction --------------------------------------------------------------------------


def _unavailable(action: ProcessAction) -> ProcessActionUnavailable:
    return ProcessActionUnavailable(f"{action.value} is not available on this host")


async def _release_weights(client: EngineClient, policy: EvictionPolicy) -> None:
    level = policy.vllm_sleep_level
    if level is None:
        return
    # abort: a finished drain left nothing in flight; after a drain timeout the cut
    # requests get an error instead of an engine that sleeps under them.

    await client.sleep(level, mode="abort")
    if not await client.is_sleeping():
        raise LifecycleError(f"engine answered /sleep?level={level} but is not sleeping")


NCCL_ACTIONS = (ProcessAction.CUDA_SUSPEND, ProcessAction.CHECKPOINT)


def _tensor_parallel(target: EngineTarget) -> bool:
    return tensor_parallel_size(target.spec.argv) > 1


async def _apply_process_action(
    target: EngineTarget,
    process: EngineProcess,
    action: ProcessAction,
    *,
    actions: ProcessActions | None,
    stop_grace: float,
) -> None:
    if action is ProcessAction.KEEP_RUNNING:
        return
    if action is ProcessAction.STOP:
        await supervisor.stop_async(process, grace=stop_grace)
        remove_engine_files(tmp_dir=target.spec.tmp_dir, uds=target.spec.uds)
        return
    if actions is None:
        raise _unavailable(action)
    if action is ProcessAction.CUDA_SUSPEND:
        await actions.suspend(target, process)
    else:
        await actions.checkpoint(target, process)


_STATUS_AFTER: dict[ProcessAction, EngineStatus] = {
    ProcessAction.KEEP_RUNNING: EngineStatus.SLEEPING,
    ProcessAction.CUDA_SUSPEND: EngineStatus.SUSPENDED,
    ProcessAction.CHECKPOINT: EngineStatus.CHECKPOINTED,
    ProcessAction.STOP: EngineStatus.STOPPED,
}


async def _escalate(
    target: EngineTarget, process: EngineProcess, reason: str, stop_grace: float
) -> EvictOutcome:
    failure = await stop_engine(target, process, stop_grace)
    if failure:
        raise EvictionError(f"{reason}; escalating to stop failed too: {failure}")
    return EvictOutcome(
        STOPPED_POLICY, escalated=True, error=reason, memory_check=MemoryCheck.EXITED
    )


async def evict(
    target: EngineTarget,
    process: EngineProcess | None,
    *,
    memory_probe: EngineMemoryProbe,
    stop_grace: float,
    memory_tolerance_bytes: int = 0,
    timeouts: CallTimeouts | None = None,
    process_actions: ProcessActions | None = None,
    baseline: EvictionBaseline | None = None,
) -> EvictOutcome:
    """Free the GPU by `target.eviction`: weights first, then the process; then verify.

    `baseline` may be taken while the engine drains (its memory does not change then:
    vLLM allocates weights and KV cache at start-up); without it, it is taken here.

    Any failure (an error answer, a hang past the call timeout, an engine that says it
    sleeps but is not, memory that did not come back, a process action that is missing or
    fails) escalates to stopping the group. Raises EvictionError only if even that fails.
    """
    policy = target.eviction
    if _live(process) is None:
        if process is not None:  # its workers may outlive the leader
            await _escalate(target, process, "engine process is gone", stop_grace)
        return EvictOutcome(STOPPED_POLICY, error=f"{target.name} was not running")
    assert process is not None

    baseline = baseline or eviction_baseline(process, memory_probe)
    pids, held_before = baseline.pids, baseline.held
    try:
        check_sleep_mode(target, process)
        async with _client(target, timeouts) as client:
            await _release_weights(client, policy)
            if policy.process in NCCL_ACTIONS and _tensor_parallel(target):
                # NCCL's communicators hold device memory and peer connections that
                # neither the CUDA driver nor CRIU can checkpoint: vLLM tears them down.
                await client.collective_rpc("suspend_nccl")
        await _apply_process_action(
            target, process, policy.process, actions=process_actions, stop_grace=stop_grace
        )
        tolerance = memory_tolerance_bytes * max(1, len(target.gpu_ids))
        after = memory_probe(pids)
        checked = verify_memory(policy.process, held_before, after, pids=pids, tolerance=tolerance)
    except Exception as exc:
        reason = f"eviction of {target.name} by {policy.label} failed: {_describe(exc)}"
        return await _escalate(target, process, reason, stop_grace)
    status = _STATUS_AFTER[policy.process]
    kept = process if status in (EngineStatus.SLEEPING, EngineStatus.SUSPENDED) else None
    return EvictOutcome(policy, status=status, process=kept, memory_check=checked)


# --- bring-up --------------------------------------------------------------------------


def bring_up_kind(target: EngineTarget) -> BringUpKind:
    """How `bring_up` will bring `target` up (checks whether its process still lives)."""
    return _bring_up_kind(target, _live(target.process))


def _bring_up_kind(target: EngineTarget, process: EngineProcess | None) -> BringUpKind:
    """How to bring `target` up; COLD_START whenever its recorded state cannot be trusted."""
    evicted = target.evicted
    if process is None:
        if target.status is EngineStatus.CHECKPOINTED and evicted is not None:
            return BringUpKind.RESTORE
        return BringUpKind.COLD_START  # a dead recorded process is never "woken"
    if target.status is EngineStatus.RUNNING:
        return BringUpKind.ALREADY_ACTIVE
    if target.status is EngineStatus.SUSPENDED:
        return BringUpKind.RESUME
    if target.status is EngineStatus.SLEEPING and evicted and evicted.vllm_sleep_level:
        return BringUpKind.WAKE
    # Starting, draining, failed, or sleeping without a known level: a live process in a
    # state we cannot continue from is restarted rather than guessed at.
    return BringUpKind.COLD_START


async def _wake_weights(client: EngineClient, evicted: EvictionPolicy | None) -> None:
    """Undo the weights half of an eviction, then verify with /is_sleeping."""
    if evicted is None or evicted.weights is WeightsAction.RETAIN:
        return
    if evicted.weights is WeightsAction.DISCARD:
        await client.wake_after_discard()  # without reload_weights the output is garbage
    else:
        await client.wake_up()
    if await client.is_sleeping():
        raise LifecycleError("engine answered /wake_up but still reports is_sleeping=true")


async def _revive(
    kind: BringUpKind,
    target: EngineTarget,
    process: EngineProcess | None,
    *,
    timeouts: CallTimeouts | None,
    actions: ProcessActions | None,
    weights: WeightsAction | None = None,
) -> None:
    """Wake or resume a live `process` (restore has already produced it)."""
    evicted = target.evicted
    if kind is BringUpKind.RESUME:
        if actions is None:
            raise _unavailable(ProcessAction.CUDA_SUSPEND)
        assert process is not None
        await actions.resume(target, process)
    async with _client(target, timeouts) as client:
        if kind in (BringUpKind.RESUME, BringUpKind.RESTORE) and _tensor_parallel(target):
            await client.collective_rpc("resume_nccl")
        await _wake_weights(client, evicted if weights is None else _as_evicted(weights))


def _as_evicted(weights: WeightsAction) -> EvictionPolicy | None:
    """The eviction an image's weights state calls for undoing on bring-up."""
    if weights is WeightsAction.RETAIN:
        return None
    return EvictionPolicy(weights, ProcessAction.CHECKPOINT)


async def _restore(
    target: EngineTarget, actions: ProcessActions | None, on_spawned: OnSpawned | None
) -> Restored:
    if actions is None:
        raise BringUpError(
            f"restore of {target.name} failed: {ProcessAction.CHECKPOINT.value} "
            "is not available on this host"
        )
    try:
        restored = await actions.restore(target)
    except Exception as exc:
        raise BringUpError(f"restore of {target.name} failed: {_describe(exc)}") from exc
    if on_spawned is not None:
        try:
            await on_spawned(restored.process)
        except BaseException:
            kill_now(restored.process, DEFAULT_STOP_GRACE)
            raise
    return restored


async def _restore_and_revive(
    target: EngineTarget,
    *,
    timeouts: CallTimeouts | None,
    stop_grace: float,
    actions: ProcessActions | None,
    on_spawned: OnSpawned | None,
) -> EngineProcess:
    restored = await _restore(target, actions, on_spawned)
    await _revive_or_stop(
        BringUpKind.RESTORE,
        target,
        restored.process,
        timeouts=timeouts,
        stop_grace=stop_grace,
        actions=actions,
        weights=restored.weights,
    )
    return restored.process


async def _revive_or_stop(
    kind: BringUpKind,
    target: EngineTarget,
    process: EngineProcess,
    *,
    timeouts: CallTimeouts | None,
    stop_grace: float,
    actions: ProcessActions | None,
    weights: WeightsAction | None = None,
) -> None:
    try:
        await _revive(kind, target, process, timeouts=timeouts, actions=actions, weights=weights)
    except Exception as exc:
        await stop_engine(target, process, stop_grace)
        tail = read_failure_cause(process.log_path or target.spec.log_path)
        message = f"{kind.value} of {target.name} failed: {_describe(exc)}"
        raise BringUpError(message, log_tail=tail) from exc


async def _may_restore(target: EngineTarget, actions: ProcessActions | None) -> bool:
    """A cold start that an image can replace: one made by an earlier eviction that the
    record lost track of, by `llmux_checkpoint`, or named by the model's checkpoint_path."""
    if actions is None:
        return False
    try:
        return await actions.has_image(target)
    except Exception:  # the image store cannot tell: cold-start as if there were none
        logger.exception("could not look for an image of %s", target.name)
        return False


async def bring_up(
    target: EngineTarget,
    *,
    timeouts: CallTimeouts | None = None,
    stop_grace: float = DEFAULT_STOP_GRACE,
    process_actions: ProcessActions | None = None,
    on_spawned: OnSpawned | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> tuple[BringUpKind, EngineProcess]:
    """Bring `target` up by its recorded status and eviction; how, and the live process.

    On failure the target's process group is stopped and BringUpError raised.
    `on_spawned` hears every new process identity (cold start, restore) at once.
    A restore that fails (the image store marks the image) falls back to a cold start in
    the same bring-up, so the waiting requests are served; `on_fallback` hears why.
    """
    process = _live(target.process)
    kind = _bring_up_kind(target, process)
    if kind is BringUpKind.ALREADY_ACTIVE and process is not None:
        return kind, process
    if kind is BringUpKind.COLD_START and await _may_restore(target, process_actions):
        kind = BringUpKind.RESTORE
    if kind in (BringUpKind.RESTORE, BringUpKind.COLD_START) and target.process is not None:
        # An engine we cannot continue from, or a dead one's group, must not linger.
        await _stop_group(target.process, stop_grace)
    if kind is BringUpKind.RESTORE:
        try:
            restored = await _restore_and_revive(
                target,
                timeouts=timeouts,
                stop_grace=stop_grace,
                actions=process_actions,
                on_spawned=on_spawned,
            )
            return kind, restored
        except BringUpError as exc:
            logger.warning("%s; cold-starting %s instead", exc, target.name)
            if on_fallback is not None:
                on_fallback(f"{exc}; cold-started instead")
            kind, process = BringUpKind.COLD_START, None
    if kind is BringUpKind.COLD_START:
        started = await cold_start(
            target, timeouts=timeouts, stop_grace=stop_grace, on_spawned=on_spawned
        )
        return kind, started
    assert process is not None
    await _revive_or_stop(
        kind, target, process, timeouts=timeouts, stop_grace=stop_grace, actions=process_actions
    )
    return kind, process


# --- readiness -------------------------------------------------------------------------


async def _check_ready(
    target: EngineTarget,
    timeouts: CallTimeouts | None,
    on_healthy: Callable[[], Awaitable[None]] | None,
) -> None:
    async with _client(target, timeouts) as client:
        if not await client.health():
            raise LifecycleError("/health did not answer 200")
        if on_healthy is not None:
            await on_healthy()
        # /health does not see decode stalls: only real work (a token, an embedding) proves
        # the engine serves, and which work depends on the model (readiness.py).
        await run_probe(client, target.readiness, target.served_name)


async def readiness(
    target: EngineTarget,
    process: EngineProcess,
    *,
    timeouts: CallTimeouts | None = None,
    timeout: float | None = None,
    stop_grace: float = DEFAULT_STOP_GRACE,
    on_healthy: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Health, then the model's probe (one token, one embedding, or nothing more for a
    health-only engine: `target.readiness`), within `timeout` (default: the calls' own).

    `on_healthy` hears when /health answered, before the probe. On failure the target's
    process group is stopped and ReadinessError raised.
    """
    try:
        async with asyncio.timeout(timeout):
            await _check_ready(target, timeouts, on_healthy)
    except Exception as exc:  # TimeoutError included
        await stop_engine(target, process, stop_grace)
        tail = read_failure_cause(process.log_path)
        message = f"readiness of {target.name} failed: {_describe(exc)}"
        raise ReadinessError(message, log_tail=tail) from exc
