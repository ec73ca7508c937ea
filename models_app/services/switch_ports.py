"""The database side of a switch: what the core switcher asks of the outside world."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from llmux_site.core.gpu import GpuProbe, detect_probe
from llmux_site.core.notify import Listener
from llmux_site.core.policy import EvictionPolicy
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import (
    EngineStatus,
    Outcome,
    Phase,
    SwitchPlan,
    SwitchResult,
)
from models_app.models import (
    ModelDefinition,
    SwapEvent,
    SwapOutcome,
    SwitchRequest,
    SwitchStatus,
)
from models_app.services import notify, presence
from models_app.services.runtime import raise_drain, record_engine_status

POLL_SECONDS = 0.02
PHASE_COLUMNS = {
    Phase.BACKOFF: "backoff_ms",
    Phase.COOLDOWN: "cooldown_ms",
    Phase.DRAIN: "drain_ms",
    Phase.EVICT: "evict_ms",
    Phase.BRINGUP: "bringup_ms",
    Phase.READINESS: "readiness_ms",
}

_probe: GpuProbe | None = None


def gpu_probe() -> GpuProbe:
    global _probe
    if _probe is None:
        _probe = detect_probe(settings.LLMUX_DIRS["ledger"])
    return _probe


class DbSwitchPorts:
    """SwitchPorts backed by the database; the swap row is created when work begins."""

    def __init__(self, *, request: SwitchRequest, plan: SwitchPlan) -> None:
        self.request = request
        self.plan = plan
        self.models = {m.name: m for m in self._models(plan)}
        self.swap: SwapEvent | None = None
        self.drain_tokens: dict[str, int] = {}
        self.early_phases: dict[str, float] = {}  # phase durations, written at the end
        self.started = time.monotonic()
        self._signal: asyncio.Event | None = None
        self._listener: Listener | None = None

    async def _pause(self) -> None:
        """Wait for a "look now" from a web process (or one poll interval at most)."""
        if self._listener is None:
            self._signal = asyncio.Event()
            signal = self._signal
            self._listener = await notify.bus().listen(lambda _message: signal.set())
        assert self._signal is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal.wait(), POLL_SECONDS)
        self._signal.clear()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    @staticmethod
    def _models(plan: SwitchPlan) -> list[ModelDefinition]:
        names = [plan.incoming.name] + ([plan.outgoing.name] if plan.outgoing else [])
        return list(ModelDefinition.objects.filter(name__in=names))

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def waiting(self, model: str) -> int:
        return await sync_to_async(presence.total_waiting)(model)

    async def begin_drain(self, model: str) -> None:
        self.drain_tokens[model] = await sync_to_async(raise_drain)(self.models[model])

    async def wait_drained(self, model: str, timeout: float) -> bool:
        token = self.drain_tokens.get(model, 0)
        deadline = time.monotonic() + timeout
        check = sync_to_async(presence.all_drained)
        while not await check(model, token):
            if time.monotonic() >= deadline:
                return False
            await self._pause()
        return True

    async def phase(self, phase: Phase, elapsed_ms: float | None) -> None:
        if elapsed_ms is not None:
            # Durations are written with the outcome in one UPDATE (fewer writes on the
            # switch path); only the start of a phase is written live, for the dashboard.
            column = PHASE_COLUMNS.get(phase)
            if column is not None:
                self.early_phases[column] = elapsed_ms
            return
        if phase in (Phase.BACKOFF, Phase.CHECK) and self.swap is None:
            return  # nothing has happened yet: a skipped switch leaves no swap row
        await sync_to_async(self._record_phase)(phase, elapsed_ms)

    def _record_phase(self, phase: Phase, elapsed_ms: float | None) -> None:
        swap = self.swap or self._open_swap()
        SwapEvent.objects.filter(pk=swap.pk).update(phase=phase.value)

    def _open_swap(self) -> SwapEvent:
        outgoing = self.plan.outgoing
        incoming = self.plan.incoming
        # An operator eviction names the same engine on both sides: it has no target.
        eviction = outgoing is not None and outgoing.name == incoming.name
        self.swap = SwapEvent.objects.create(
            gpu_group=self.plan.group,
            from_model=self.models.get(outgoing.name) if outgoing else None,
            from_name=outgoing.name if outgoing else "",
            to_model=None if eviction else self.models[incoming.name],
            to_name="" if eviction else incoming.name,
            trigger=self.request.trigger,
            actor=self.request.actor,
            eviction_weights=outgoing.eviction.weights.value if outgoing else "",
            eviction_process=outgoing.eviction.process.value if outgoing else "",
            waiting_requests=presence.total_waiting(self.plan.incoming.name),
            gpu_memory_before=_json_memory(self.gpu_memory()),
        )
        SwitchRequest.objects.filter(pk=self.request.pk).update(swap=self.swap)
        return self.swap

    async def engine_changed(
        self,
        model: str,
        status: EngineStatus,
        *,
        process: EngineProcess | None,
        evicted: EvictionPolicy | None,
        error: str = "",
    ) -> None:
        await sync_to_async(record_engine_status)(
            self.models[model],
            status,
            process=process,
            evicted=evicted,
            error=error,
            group=self.plan.group,
        )

    async def settle(self, model: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = sync_to_async(presence.total_waiting)
        while await waiting(model) > 0 and time.monotonic() < deadline:
            await self._pause()

    def gpu_memory(self) -> Mapping[int, int]:
        return gpu_probe().used_by_device()

    def engine_gpu_memory(self, pids: Sequence[int]) -> int | None:
        return gpu_probe().used_by_pids(pids)


def _json_memory(memory: Mapping[int, int]) -> dict[str, int]:
    return {str(gpu): int(used) for gpu, used in memory.items()}


OUTCOMES = {
    Outcome.SUCCEEDED: (SwapOutcome.SUCCEEDED, SwitchStatus.SUCCEEDED),
    Outcome.FAILED: (SwapOutcome.FAILED, SwitchStatus.FAILED),
    Outcome.SKIPPED: (SwapOutcome.SKIPPED, SwitchStatus.SKIPPED),
}


def finish_swap(request: SwitchRequest, ports: DbSwitchPorts, result: SwitchResult) -> None:
    """Close the swap row (if work happened) and the switch request with the result."""
    swap_outcome, request_status = OUTCOMES[result.outcome]
    now = timezone.now()
    if ports.swap is not None:
        SwapEvent.objects.filter(pk=ports.swap.pk).update(
            outcome=swap_outcome,
            phase="",
            finished_at=now,
            total_ms=(time.monotonic() - ports.started) * 1000,
            escalated=result.escalated,
            forced_drain=result.forced_drain,
            bringup=result.bringup.value if result.bringup else "",
            gpu_memory_after=_json_memory(result.memory_after),
            error=result.error,
            **ports.early_phases,
        )
    SwitchRequest.objects.filter(pk=request.pk).update(
        status=request_status, error=result.error, finished_at=now
    )
