"""The switch executor: one `SwitchPlan` through its phases, against real engines.

Pure core: no Django. Everything outside the core (the database, web processes, events,
the clock) is reached through `SwitchPorts`; engine work is done by `lifecycle`. A switch
never raises for an engine failure: it returns a `SwitchResult` with the outcome and the
reason. Cancellation and SystemExit (django-q's task timeout) do propagate, but only after
any process this switch spawned and has not yet recorded as running is killed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from llmux_site.core import lifecycle, processes, supervisor
from llmux_site.core.engine_client import CallTimeouts
from llmux_site.core.engine_files import remove_engine_files
from llmux_site.core.eviction_policy import ProcessAction
from llmux_site.core.lifecycle import (
    EvictionBaseline,
    EvictionError,
    LifecycleError,
    ProcessActions,
)
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import (
    AWAKE,
    BringUpKind,
    EngineChange,
    EngineStatus,
    EngineTarget,
    MemoryCheck,
    Outcome,
    Phase,
    SwitchPlan,
    SwitchPorts,
    SwitchResult,
)

__all__ = ["run_eviction", "run_switch"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def run_switch(
    plan: SwitchPlan,
    ports: SwitchPorts,
    *,
    process_actions: ProcessActions | None = None,
    timeouts: CallTimeouts | None = None,
) -> SwitchResult:
    """Run `plan`: backoff, check, cooldown, drain, evict, bring-up, readiness, settle."""
    switch = _Switch(plan, ports, process_actions=process_actions, timeouts=timeouts)
    try:
        return await switch.run()
    finally:
        # Only on cancellation, SystemExit or a failing port is anything left here: an
        # engine nobody will ever record as running must not keep holding the GPU.
        switch.kill_unrecorded()


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


class _Switch:
    """The state of one switch run; each phase is a method."""

    def __init__(
        self,
        plan: SwitchPlan,
        ports: SwitchPorts,
        *,
        process_actions: ProcessActions | None,
        timeouts: CallTimeouts | None,
    ) -> None:
        self.plan = plan
        self.ports = ports
        self.actions = process_actions
        self.timeouts = timeouts
        self.result = SwitchResult(outcome=Outcome.SUCCEEDED)
        # A process spawned (or restored) by this switch and not yet recorded as running.
        self.unrecorded: EngineProcess | None = None
        # The outgoing engine's state after its eviction: written together with the
        # target's first record (one write instead of two on the switch path).
        self.pending: list[EngineChange] = []

    # -- the run --------------------------------------------------------------------

    async def run(self) -> SwitchResult:
        await self._timed(Phase.BACKOFF, self._backoff)
        if not await self._timed(Phase.CHECK, self._check):
            return self.result
        outgoing = self._outgoing()
        if outgoing is not None and not await self._evict_outgoing(outgoing):
            return self.result
        if not self.result.memory_before:
            self.result.memory_before = dict(self.ports.gpu_memory())
        brought_up = await self._bring_up_incoming()
        if brought_up is not None:
            await self._activate(*brought_up)
        await self._record()  # nothing left unwritten, whatever path ended the run
        return self.result

    def kill_unrecorded(self) -> None:
        if self.unrecorded is not None:
            lifecycle.kill_now(self.unrecorded, self.plan.stop_grace)
            self.unrecorded = None

    async def _timed(self, phase: Phase, step: Callable[[], Awaitable[T]]) -> T:
        """Run one phase, reporting its start and its end (also when it fails)."""
        await self.ports.phase(phase, None)
        started = time.monotonic()
        try:
            value = await step()
        except Exception:
            await self._finish_phase(phase, started)
            raise
        await self._finish_phase(phase, started)
        return value

    async def _finish_phase(self, phase: Phase, started: float) -> None:
        elapsed = _elapsed_ms(started)
        self.result.durations_ms[phase] = elapsed
        await self.ports.phase(phase, elapsed)

    async def _record(self, *changes: EngineChange) -> None:
        """Write `changes` after (and in the same write as) any pending ones."""
        changes = (*self.pending, *changes)
        self.pending = []
        if changes:
            await self.ports.record(*changes)

    def _fail(self, error: str) -> None:
        self.result.outcome = Outcome.FAILED
        self._note(error)

    async def _sleep_until(self, deadline: float) -> None:
        delay = deadline - self.ports.now()
        if delay > 0:
            await self.ports.sleep(delay)

    # -- backoff and check ----------------------------------------------------------

    async def _backoff(self) -> None:
        if self.plan.backoff_until is not None:
            await self._sleep_until(self.plan.backoff_until)

    async def _check(self) -> bool:
        """False when the switch ends here: nobody waits, or the target is already active."""
        incoming = self.plan.incoming
        if self.plan.skip_if_unwanted and await self.ports.waiting(incoming.name) == 0:
            self.result.outcome = Outcome.SKIPPED
            self.result.error = "nobody waits for the model any more"
            return False
        process = incoming.process
        if (
            self._outgoing() is None
            and incoming.status is EngineStatus.RUNNING
            and process is not None
            and processes.is_alive(process)
        ):
            self.result.bringup = BringUpKind.ALREADY_ACTIVE
            self.result.incoming_process = process
            return False
        return True

    # -- the outgoing engine --------------------------------------------------------

    def _outgoing(self) -> EngineTarget | None:
        """The engine to evict; none when it is the target itself or has no process."""
        outgoing = self.plan.outgoing
        if outgoing is None or outgoing.name == self.plan.incoming.name:
            return None
        return outgoing if outgoing.process is not None else None

    async def _evict_outgoing(self, outgoing: EngineTarget) -> bool:
        """Cooldown, drain, evict; False when the eviction failed beyond repair."""
        if not self.plan.force:
            await self._timed(Phase.COOLDOWN, lambda: self._cooldown(outgoing))
        # The eviction's baseline (a /proc scan and memory reads) is taken while the
        # engine drains, in a thread: the drain mostly waits, the eviction would not.
        baseline = asyncio.ensure_future(asyncio.to_thread(self._baseline, outgoing))
        try:
            await self._timed(Phase.DRAIN, lambda: self._drain(outgoing))
            taken = await baseline
        finally:
            baseline.cancel()
        return await self._timed(Phase.EVICT, lambda: self._evict(outgoing, *taken))

    def _baseline(
        self, outgoing: EngineTarget
    ) -> tuple[Mapping[int, int], EvictionBaseline | None]:
        memory = dict(self.ports.gpu_memory())
        process = outgoing.process
        if process is None or not processes.is_alive(process):
            return memory, None  # evict handles a dead engine itself
        return memory, lifecycle.eviction_baseline(process, self.ports.engine_gpu_memory)

    async def _cooldown(self, outgoing: EngineTarget) -> None:
        if outgoing.activated_at is not None and self.plan.min_active_secs > 0:
            await self._sleep_until(outgoing.activated_at + self.plan.min_active_secs)

    async def _drain(self, outgoing: EngineTarget) -> None:
        await self.ports.begin_drain(outgoing.name, outgoing.process)
        if not self.plan.drain_before_switch:
            return
        if not await self.ports.wait_drained(outgoing.name, outgoing.drain_timeout):
            # The sleep (mode=abort) or the stop that follows cuts those requests.
            self.result.forced_drain = True

    async def _evict(
        self,
        outgoing: EngineTarget,
        memory_before: Mapping[int, int],
        baseline: EvictionBaseline | None,
    ) -> bool:
        self.result.memory_before = memory_before
        try:
            evicted = await lifecycle.evict(
                outgoing,
                outgoing.process,
                baseline=baseline,
                memory_probe=self.ports.engine_gpu_memory,
                stop_grace=self.plan.stop_grace,
                memory_tolerance_bytes=self.plan.memory_tolerance_bytes,
                timeouts=self.timeouts,
                process_actions=self.actions,
            )
        except EvictionError as exc:
            await self._record(
                EngineChange(outgoing.name, EngineStatus.FAILED, outgoing.process, error=str(exc))
            )
            self._fail(str(exc))
            return False
        self.result.escalated = evicted.escalated
        self.result.memory_check = evicted.memory_check
        if evicted.escalated:
            self.result.error = evicted.error
        # Until the target's first record the outgoing engine stays recorded as draining:
        # nothing admits requests to it, and a repair after a crash checks it anyway.
        self.pending.append(
            EngineChange(
                outgoing.name, evicted.status, evicted.process, evicted.evicted, evicted.error
            )
        )
        return True

    # -- the incoming engine --------------------------------------------------------

    async def _bring_up_incoming(self) -> tuple[BringUpKind, EngineProcess] | None:
        """Bring-up then readiness; None (FAILED reported) when either fails."""
        try:
            kind, process = await self._timed(Phase.BRINGUP, self._bring_up)
            await self._timed(Phase.READINESS, lambda: self._readiness(process))
        except LifecycleError as exc:
            self.kill_unrecorded()  # lifecycle stopped it already; this only makes sure
            await self._record(
                EngineChange(self.plan.incoming.name, EngineStatus.FAILED, error=str(exc))
            )
            self._fail(str(exc))
            return None
        return kind, process

    async def _bring_up(self) -> tuple[BringUpKind, EngineProcess]:
        incoming = self.plan.incoming
        if lifecycle.bring_up_kind(incoming) in (BringUpKind.WAKE, BringUpKind.RESUME):
            # The identity is already recorded; a new one is reported by _spawned.
            await self._record(
                EngineChange(
                    incoming.name, EngineStatus.STARTING, incoming.process, incoming.evicted
                )
            )
        else:
            await self._record()  # the outgoing state is durable before anything spawns
        return await lifecycle.bring_up(
            incoming,
            timeouts=self.timeouts,
            stop_grace=self.plan.stop_grace,
            process_actions=self.actions,
            on_spawned=self._spawned,
            on_fallback=self._note,
        )

    def _note(self, message: str) -> None:
        """Add to the swap's error text; a switch that goes on still shows it (a restore
        that fell back to a cold start)."""
        self.result.error = f"{self.result.error}; {message}" if self.result.error else message

    async def _verified(self, incoming: EngineTarget) -> None:
        assert self.actions is not None
        try:
            await self.actions.restore_verified(incoming)
        except Exception:  # bookkeeping of images must not fail a switch that worked
            logger.exception("could not record the verified restore of %s", incoming.name)

    async def _spawned(self, process: EngineProcess) -> None:
        # Recorded before the health wait, so a worker dying mid-start leaves the identity
        # in the database for reconcile to find (and stop).
        self.unrecorded = process
        await self._record(EngineChange(self.plan.incoming.name, EngineStatus.STARTING, process))

    async def _readiness(self, process: EngineProcess) -> None:
        name = self.plan.incoming.name
        await lifecycle.readiness(
            self.plan.incoming,
            process,
            timeouts=self.timeouts,
            stop_grace=self.plan.stop_grace,
            on_healthy=lambda: self.ports.probing(name),
        )

    async def _activate(self, kind: BringUpKind, process: EngineProcess) -> None:
        incoming = self.plan.incoming
        await self._record(EngineChange(incoming.name, EngineStatus.RUNNING, process))
        self.unrecorded = None
        self.result.bringup = kind
        self.result.incoming_process = process
        if kind is BringUpKind.RESTORE and self.actions is not None:
            await self._verified(incoming)
        await self._timed(
            Phase.SETTLE, lambda: self.ports.settle(incoming.name, self.plan.settle_timeout)
        )
        self.result.memory_after = dict(self.ports.gpu_memory())


async def run_eviction(
    plan: SwitchPlan,
    ports: SwitchPorts,
    *,
    process_actions: ProcessActions | None = None,
    timeouts: CallTimeouts | None = None,
) -> SwitchResult:
    """Evict `plan.outgoing` by its policy without bringing anything up (operator action).

    An awake engine is drained and evicted like in a switch (no cooldown: the operator
    asked). An engine that is already evicted is only stopped, when the policy says stop.
    """
    target = plan.outgoing
    switch = _Switch(plan, ports, process_actions=process_actions, timeouts=timeouts)
    result = switch.result
    process = target.process if target is not None else None
    if target is None or process is None or not processes.is_alive(process):
        result.outcome = Outcome.SKIPPED
        result.error = "the engine has no live process: there is nothing to evict"
        return result
    if target.status in AWAKE:
        await switch._evict_outgoing(target)
        await switch._record()
    elif target.eviction.process is ProcessAction.STOP:
        await ports.phase(Phase.EVICT, None)
        started = time.monotonic()
        await supervisor.stop_async(process, grace=plan.stop_grace)
        remove_engine_files(tmp_dir=target.spec.tmp_dir, uds=target.spec.uds)
        result.memory_check = MemoryCheck.EXITED
        await ports.record(EngineChange(target.name, EngineStatus.STOPPED))
        await switch._finish_phase(Phase.EVICT, started)
    else:
        result.outcome = Outcome.SKIPPED
        result.error = f"it is {target.status.value} already and its policy keeps the process"
    result.memory_after = dict(ports.gpu_memory())
    return result
