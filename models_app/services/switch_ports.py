"""The database side of a switch: what the core switcher asks of the outside world."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from functools import cache
from typing import Any, TypeVar

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from llmux_site.core.gpu import GpuProbe, GpuProbeError, detect_probe
from llmux_site.core.notify import Listener
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import (
    EngineChange,
    Outcome,
    Phase,
    SwitchPlan,
    SwitchResult,
)
from llmux_site.logs import event
from models_app import metrics, protocol
from models_app.models import (
    ModelDefinition,
    SwapEvent,
    SwapOutcome,
    SwitchRequest,
    SwitchStatus,
)
from models_app.services import presence
from models_app.services.runtime import begin_drain, record_changes

T = TypeVar("T")

POLL_SECONDS = 0.02
# A phase still running after this long gets the swap row's live phase written on its own;
# a shorter one is never written (no watcher could have seen it).
LIVE_PHASE_AFTER = 0.05
log = logging.getLogger(__name__)

PHASE_COLUMNS = {
    Phase.BACKOFF: "backoff_ms",
    Phase.COOLDOWN: "cooldown_ms",
    Phase.DRAIN: "drain_ms",
    Phase.EVICT: "evict_ms",
    Phase.BRINGUP: "bringup_ms",
    Phase.READINESS: "readiness_ms",
}

_probe: GpuProbe | None = None


@cache
def switch_db() -> ThreadPoolExecutor:
    """The thread (and database connection) a worker's switches read and write through.

    One thread keeps a switch's writes in the order it issued them, and keeps its
    connection open between switches instead of connecting anew for each.
    """
    return ThreadPoolExecutor(1, "llmux-switch-db")


def gpu_probe() -> GpuProbe:
    global _probe
    if _probe is None:
        _probe = detect_probe(settings.LLMUX_DIRS["ledger"])
    return _probe


class DbSwitchPorts:
    """SwitchPorts backed by the database.

    Writes on the switch path are one per engine state change; the swap row is opened
    right after the first of them, off the path, and a phase that lasts longer than
    LIVE_PHASE_AFTER gets its own (not awaited) write, so watchers still see long
    phases. Drain acknowledgements arrive on the host bus before web processes write them.
    """

    def __init__(
        self,
        *,
        request: SwitchRequest,
        plan: SwitchPlan,
        models: Sequence[ModelDefinition],
        drain_tokens: Mapping[str, int],
    ) -> None:
        self.request = request
        self.drain_tokens = dict(drain_tokens)  # as read with the plan
        self.plan = plan
        self.models = {m.name: m for m in models}
        self.swap: SwapEvent | None = None
        self.phase_now: Phase | None = None  # the phase the switch is in (live)
        self.phase_written: Phase | None = None  # the phase the swap row shows
        self.early_phases: dict[str, float] = {}  # phase durations, written at the end
        self.started = time.monotonic()
        self._behind: list[Future[None]] = []
        self._phase_timer: asyncio.TimerHandle | None = None
        self._waiting: dict[str, int] = {}  # last answer of waiting(), for the swap row
        self._versions: dict[str, int] = {}  # row version of each engine's last write
        self._instances: list[presence.LiveInstance] | None = None  # as waiting() read them
        self._drains: dict[str, tuple[int, dict[str, int]]] = {}  # token, acks at start
        self._bus_acks: set[tuple[str, str, int]] = set()  # (instance, model, token)
        self._signal = asyncio.Event()
        self._kinds: set[bytes] = set()  # kinds of bus messages since the last pause
        self._listener: Listener | None = None
        # A connection the database closed since the last switch is replaced first.
        self._behind.append(switch_db().submit(close_old_connections))

    # -- plumbing ---------------------------------------------------------------------

    async def _db(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(switch_db(), func, *args)

    async def _listen(self) -> None:
        if self._listener is None:
            self._listener = await protocol.bus().listen(self._on_message)

    def _on_message(self, data: bytes) -> None:
        message = protocol.read(data)
        if isinstance(message, protocol.Drained):
            self._bus_acks.add((message.instance, message.model, message.token))
        if message is not None:  # an unreadable one only wakes: the database decides
            self._kinds.add(message.KIND)
        self._signal.set()

    async def _pause(self) -> set[bytes]:
        """Wait for a bus message (or one poll interval); the kinds that arrived."""
        await self._listen()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_SECONDS):  # wait_for may swallow a cancel
                await self._signal.wait()
        self._signal.clear()
        kinds, self._kinds = self._kinds, set()
        return kinds

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._phase_timer is not None:
            self._phase_timer.cancel()
        self.wait_written()

    def wait_written(self) -> None:
        """Block until every write issued behind (phase marks) is done; raise its error."""
        behind, self._behind = self._behind, []
        wait_futures(behind)
        for future in behind:
            future.result()

    # -- SwitchPorts ------------------------------------------------------------------

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def waiting(self, model: str) -> int:
        self._instances = await self._db(presence.live_instances)
        self._waiting[model] = presence.total_waiting(model, self._instances)
        return self._waiting[model]

    async def begin_drain(self, model: str, process: EngineProcess | None) -> None:
        await self._listen()  # before the write: no acknowledgement may pass unheard
        self._drains[model] = await self._db(self._begin_drain, model, process)
        self._open_behind()

    def _begin_drain(self, model: str, process: EngineProcess | None) -> tuple[int, dict[str, int]]:
        token = begin_drain(
            self.models[model], process, self.plan.group, current_token=self.drain_tokens.get(model)
        )
        # The web processes read by the check a moment ago will do: one that came up since
        # reads the draining state before it could admit anything.
        instances = self._instances
        if instances is None:
            instances = presence.live_instances()
        return token, {i.id: int(i.drained.get(model, -1)) for i in instances}

    async def wait_drained(self, model: str, timeout: float) -> bool:
        token, acks = self._drains.get(model, (0, {}))
        deadline = time.monotonic() + timeout
        kinds: set[bytes] = set()
        while True:
            # Every web process live at the start acknowledged, on the bus or in its row.
            if all(
                acked >= token or (i, model, token) in self._bus_acks for i, acked in acks.items()
            ):
                return True
            # The database decides whenever the bus said nothing new (or a web process
            # reported): it also drops web processes that died during the drain.
            quiet = not kinds or protocol.PresenceReported.KIND in kinds
            if quiet and await self._db(presence.all_drained, model, token):
                return True
            if time.monotonic() >= deadline:
                return False
            kinds = await self._pause()

    async def phase(self, phase: Phase, elapsed_ms: float | None) -> None:

        if elapsed_ms is not None:
            # Durations are written with the outcome in one UPDATE at the end.
            column = PHASE_COLUMNS.get(phase)
            if column is not None:
                self.early_phases[column] = elapsed_ms
            return
        if phase in (Phase.BACKOFF, Phase.CHECK) and self.swap is None:
            return  # nothing has happened yet: a skipped switch leaves no swap row
        self.phase_now = phase
        if self._phase_timer is not None:
            self._phase_timer.cancel()
        self._phase_timer = asyncio.get_running_loop().call_later(
            LIVE_PHASE_AFTER, self._write_phase_behind
        )

    def _write_phase_behind(self) -> None:
        self._behind.append(switch_db().submit(self._sync_phase))

    def _sync_phase(self, *, open_only: bool = False) -> None:
        """Open the swap row, or move its phase, to where the switch is (db thread).

        `open_only`: with an engine state write, only a missing row is written; a phase
        that lasts is written by its timer anyway, and a short one needs no write.
        """
        phase = self.phase_now
        if phase is None or phase == self.phase_written:
            return
        if self.swap is None:
            self._open_swap(phase)
        elif open_only:
            return
        else:
            SwapEvent.objects.filter(pk=self.swap.pk).update(phase=phase.value)
        self.phase_written = phase
        protocol.publish(protocol.SwapChanged())  # autocommitted: the dashboard may read it now

    def _open_swap(self, phase: Phase) -> None:
        outgoing = self.plan.outgoing
        incoming = self.plan.incoming
        # An operator eviction names the same engine on both sides: it has no target.
        eviction = outgoing is not None and outgoing.name == incoming.name
        waiting = self._waiting.get(incoming.name)
        if waiting is None:
            waiting = presence.total_waiting(incoming.name)
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
            waiting_requests=waiting,
            gpu_memory_before=_json_memory(self.gpu_memory()),
            phase=phase.value,
        )
        SwitchRequest.objects.filter(pk=self.request.pk).update(swap=self.swap)
        event(
            log,
            "switch_started",
            f"switch {self.swap.from_name or '-'} -> {self.swap.to_name or '(evict)'} started",
            swap=self.swap.pk,
            group=self.plan.group,
            model=incoming.name,
            outgoing=outgoing.name if outgoing else None,
            phase=phase.value,
            trigger=self.request.trigger,
        )

    def ensure_swap(self) -> None:
        """Open the swap row now if work happened but no write opened it (sync)."""
        self.wait_written()
        if self.swap is None and self.phase_now is not None:
            self._open_swap(self.phase_now)

    async def record(self, *changes: EngineChange) -> None:
        pairs = [(self.models[change.model], change) for change in changes]
        await self._db(self._record, pairs)
        self._open_behind()

    def _open_behind(self) -> None:
        """Open the swap row after (not in) the first engine state write of the switch.

        Off the switch path: the state write is what web processes wait for; the row is
        written while the switch waits on engines or web processes anyway.
        """
        if self.swap is None:
            self._behind.append(switch_db().submit(self._sync_phase, open_only=True))

    def _record(self, pairs: list[tuple[ModelDefinition, EngineChange]]) -> None:
        self._versions |= record_changes(pairs, self.plan.group)

    async def probing(self, model: str) -> None:
        # A hint only (nothing is written): the row version says which start it is about,
        # so a web process never acts on a hint about an earlier start of the engine.
        version = self._versions.get(model)
        if version is not None:
            protocol.publish(protocol.Probing(model, version))

    async def settle(self, model: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        kinds: set[bytes] = set()
        while time.monotonic() < deadline:
            # Only a web process's report (or the poll interval) can change the answer.
            look = not kinds or protocol.PresenceReported.KIND in kinds
            if look and await self._db(presence.total_waiting, model) == 0:
                return
            kinds = await self._pause()

    def gpu_memory(self) -> Mapping[int, int]:
        # A reading for the record: a probe that fails must not fail the switch (or leave
        # its swap row open), so the row says "unknown" instead.
        try:
            return gpu_probe().used_by_device()
        except GpuProbeError as exc:
            log.warning("GPU memory not read: %s", exc)
            return {}

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
    if result.outcome is not Outcome.SKIPPED:
        ports.ensure_swap()
    total_ms = (time.monotonic() - ports.started) * 1000
    if ports.swap is not None:
        SwapEvent.objects.filter(pk=ports.swap.pk).update(
            outcome=swap_outcome,
            phase="",
            finished_at=now,
            total_ms=total_ms,
            escalated=result.escalated,
            memory_check=result.memory_check.value,
            forced_drain=result.forced_drain,
            bringup=result.bringup.value if result.bringup else "",
            gpu_memory_after=_json_memory(result.memory_after),
            error=result.error,
            **ports.early_phases,
        )
    SwitchRequest.objects.filter(pk=request.pk).update(
        status=request_status, error=result.error, finished_at=now
    )
    if ports.swap is not None:
        protocol.publish(protocol.SwapChanged())
        _observe(ports, swap_outcome, total_ms, result)


def _observe(
    ports: DbSwitchPorts, outcome: str, total_ms: float, result: SwitchResult | None = None
) -> None:
    """The switch in the Prometheus metrics (models_app.metrics) and the event log."""
    outgoing, incoming = ports.plan.outgoing, ports.plan.incoming
    evicting_only = outgoing is not None and outgoing.name == incoming.name
    phases_ms = {
        column.removesuffix("_ms"): round(ms, 1) for column, ms in ports.early_phases.items()
    }
    fields: dict[str, Any] = {
        "swap": ports.swap.pk if ports.swap else None,
        "group": ports.plan.group,
        "model": incoming.name,
        "outgoing": outgoing.name if outgoing else None,
        "total_ms": round(total_ms, 1),
        "phases_ms": phases_ms,
    }
    if result is not None and result.escalated:
        event(
            log,
            "eviction_escalated",
            f"eviction of {fields['outgoing']} escalated to stop: {result.error}",
            level=logging.WARNING,
            **fields,
            error=result.error,
        )
    if outcome == "failed":
        error = result.error if result else ""
        event(
            log,
            "switch_failed",
            f"switch to {incoming.name} failed: {error}",
            level=logging.WARNING,
            **fields,
            error=error,
        )
    elif not evicting_only and outcome == "succeeded":
        bringup = result.bringup.value if result and result.bringup else None
        event(
            log,
            "model_activated",
            f"{incoming.name} active ({bringup}, {total_ms:.0f} ms)",
            **fields,
            bringup=bringup,
        )
    active_s = None
    if outgoing is not None and outgoing.activated_at is not None:
        active_s = max(0.0, ports.now() - outgoing.activated_at)
    metrics.observe_switch(
        outgoing.name if outgoing is not None else "",
        "" if evicting_only else incoming.name,
        outcome,
        total_ms / 1000,
        {column.removesuffix("_ms"): ms / 1000 for column, ms in ports.early_phases.items()},
        active_s,
    )
