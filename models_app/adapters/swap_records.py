"""The swap history of one switch: its SwapEvent row, written behind the switch.

The only writer of SwapEvent rows (and of a switch request's link to its swap and its
closing). Writes issued on the switch path go to the worker's one database thread and
are not awaited; `finish_swap` waits for them before it closes the row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from concurrent.futures import wait as wait_futures
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from llmux_site.core.switching import Outcome, Phase, SwitchPlan, SwitchResult
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

log = logging.getLogger(__name__)

# A phase still running after this long gets the swap row's live phase written on its own;
# a shorter one is never written (no watcher could have seen it).
LIVE_PHASE_AFTER = 0.05

# Every phase has its column, so the phases of a swap add up to its total (with what
# lies between them: the writes and reads that join one phase to the next).
PHASE_COLUMNS = {phase: f"{phase.value}_ms" for phase in Phase}

OUTCOMES = {
    Outcome.SUCCEEDED: (SwapOutcome.SUCCEEDED, SwitchStatus.SUCCEEDED),
    Outcome.FAILED: (SwapOutcome.FAILED, SwitchStatus.FAILED),
    Outcome.SKIPPED: (SwapOutcome.SKIPPED, SwitchStatus.SKIPPED),
}


def write_behind(
    db: Executor, pending: list[Future[None]], func: Callable[..., None], *args: object
) -> None:
    """Issue a write on the switch's database thread without awaiting it; `pending` keeps it.

    Why: the swap row is history, not coordination (web processes wait on the engine state
    writes only), yet opening it and moving its phase would cost the switch a database round
    trip each. docs/PERFORMANCE.md, "Switch orchestration overhead": 50.3 ms p50 (embedded)
    and 53.2 ms p50 (redis, target <= 50 ms, missed by 3.2 ms) with these writes off the
    path, so one more awaited write there is one the redis target cannot take. The one
    thread keeps the writes in the order they were issued; `SwapRecord.wait_written` joins
    them (and raises their error) before the row is closed.
    """
    pending.append(db.submit(func, *args))


class SwapRecord:
    """One switch's swap row: opened after its first engine state write, phases, closing."""

    def __init__(
        self,
        *,
        request: SwitchRequest,
        plan: SwitchPlan,
        models: Mapping[str, ModelDefinition],
        db: Executor,
        gpu_memory: Callable[[], Mapping[int, int]],
    ) -> None:
        self.request = request
        self.plan = plan
        self.models = models
        self.swap: SwapEvent | None = None
        self.phase_now: Phase | None = None  # the phase the switch is in (live)
        self.phase_since: float | None = None  # when it began (wall clock)
        self.phase_written: Phase | None = None  # the phase the swap row shows
        self.early_phases: dict[str, float] = {}  # phase durations, written at the end
        self.waiting: dict[str, int] = {}  # the ports' last answer of waiting(), per model
        self.started = time.monotonic()
        # The wait in the queue ends where the switch's total begins: the two add up to
        # the time from the request to the end of its switch.
        self.queued_ms = max(0.0, (timezone.now() - request.created_at).total_seconds() * 1000)
        self._db = db
        self._gpu_memory = gpu_memory
        self._pending: list[Future[None]] = []
        self._phase_timer: asyncio.TimerHandle | None = None

    def behind(self, func: Callable[..., None], *args: object) -> None:
        """A write (or connection chore) on the database thread, not awaited."""
        write_behind(self._db, self._pending, func, *args)

    def phase(self, phase: Phase, elapsed_ms: float | None) -> None:
        """A phase began (`elapsed_ms` None) or ended; call from the switch's event loop."""
        if elapsed_ms is not None:
            # Durations are written with the outcome in one UPDATE at the end.
            column = PHASE_COLUMNS.get(phase)
            if column is not None:
                self.early_phases[column] = elapsed_ms
            return
        if phase in (Phase.BACKOFF, Phase.CHECK) and self.swap is None:
            return  # nothing has happened yet: a skipped switch leaves no swap row
        self.phase_now = phase
        self.phase_since = time.time()
        self._write_phase_if_it_lasts()

    def _write_phase_if_it_lasts(self) -> None:
        """Write the live phase only once it has lasted LIVE_PHASE_AFTER (a timer, re-armed).

        Why: a watcher polls far slower than a phase passes. docs/PERFORMANCE.md, "Switch
        orchestration overhead": drain / evict / bring-up / readiness take 2.3 / 5.4 / 8.5 /
        24.2 ms p50 (embedded), all under the 50 ms here, so a fast switch writes no phase
        row at all; a slow phase (a cold start, a dump) is still shown while it lasts.
        """
        if self._phase_timer is not None:
            self._phase_timer.cancel()
        self._phase_timer = asyncio.get_running_loop().call_later(
            LIVE_PHASE_AFTER, self.behind, self._sync_phase
        )

    def open_behind(self) -> None:
        """Open the swap row after (not in) the first engine state write of the switch.

        Off the switch path: the state write is what web processes wait for; the row is
        written while the switch waits on engines or web processes anyway.
        """
        if self.swap is None:
            self.behind(self._sync_phase, True)

    def _sync_phase(self, open_only: bool = False) -> None:
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
            # The phases finished so far go with it: the dashboard's progress shows them
            # while the switch runs (the same UPDATE, still off the switch path).
            SwapEvent.objects.filter(pk=self.swap.pk).update(
                phase=phase.value, phase_started_at=self._phase_started_at(), **self.early_phases
            )
        self.phase_written = phase
        protocol.publish(protocol.SwapChanged())  # autocommitted: the dashboard may read it now

    def _open_swap(self, phase: Phase) -> None:
        outgoing, incoming = self.plan.outgoing, self.plan.incoming
        # An operator eviction names the same engine on both sides: it has no target.
        eviction = outgoing is not None and outgoing.name == incoming.name
        waiting = self.waiting.get(incoming.name)
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
            operation=self.request.kind,
            queue_ms=self.queued_ms,
            eviction_weights=outgoing.eviction.weights.value if outgoing else "",
            eviction_process=outgoing.eviction.process.value if outgoing else "",
            waiting_requests=waiting,
            gpu_memory_before=json_memory(self._gpu_memory()),
            phase=phase.value,
            phase_started_at=self._phase_started_at(),
            **self.early_phases,
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

    def _phase_started_at(self) -> datetime | None:
        since = self.phase_since
        return datetime.fromtimestamp(since, UTC) if since is not None else None

    def ensure_swap(self) -> None:
        """Open the swap row now if work happened but no write opened it (sync)."""
        self.wait_written()
        if self.swap is None and self.phase_now is not None:
            self._open_swap(self.phase_now)

    def wait_written(self) -> None:
        """Block until every write issued behind is done; raise its error."""
        pending, self._pending = self._pending, []
        wait_futures(pending)
        for future in pending:
            future.result()

    def close(self) -> None:
        """No more phase writes; the ones issued are waited for."""
        if self._phase_timer is not None:
            self._phase_timer.cancel()
        self.wait_written()


def json_memory(memory: Mapping[int, int]) -> dict[str, int]:
    return {str(gpu): int(used) for gpu, used in memory.items()}


def finish_swap(request: SwitchRequest, record: SwapRecord, result: SwitchResult) -> None:
    """Close the swap row (if work happened) and the switch request with the result."""
    swap_outcome, request_status = OUTCOMES[result.outcome]
    now = timezone.now()
    if result.outcome is not Outcome.SKIPPED:
        record.ensure_swap()
    total_ms = (time.monotonic() - record.started) * 1000
    if record.swap is not None:
        SwapEvent.objects.filter(pk=record.swap.pk).update(
            outcome=swap_outcome,
            phase="",
            finished_at=now,
            total_ms=total_ms,
            escalated=result.escalated,
            memory_check=result.memory_check.value,
            forced_drain=result.forced_drain,
            bringup=result.bringup.value if result.bringup else "",
            gpu_memory_after=json_memory(result.memory_after),
            error=result.error,
            **record.early_phases,
        )
    SwitchRequest.objects.filter(pk=request.pk).update(
        status=request_status, error=result.error, finished_at=now
    )
    if record.swap is not None:
        protocol.publish(protocol.SwapChanged())
        _observe(record, swap_outcome, total_ms, result)


def _observe(record: SwapRecord, outcome: str, total_ms: float, result: SwitchResult) -> None:
    """The switch in the Prometheus metrics (models_app.metrics) and the event log."""
    outgoing, incoming = record.plan.outgoing, record.plan.incoming
    evicting_only = outgoing is not None and outgoing.name == incoming.name
    fields: dict[str, Any] = {
        "swap": record.swap.pk if record.swap else None,
        "group": record.plan.group,
        "model": incoming.name,
        "outgoing": outgoing.name if outgoing else None,
        "total_ms": round(total_ms, 1),
        "phases_ms": {
            column.removesuffix("_ms"): round(ms, 1) for column, ms in record.early_phases.items()
        },
    }
    _log_outcome(fields, outcome, result, total_ms=total_ms, evicting_only=evicting_only)
    active_s = None
    if outgoing is not None and outgoing.activated_at is not None:
        active_s = max(0.0, time.time() - outgoing.activated_at)
    metrics.observe_switch(
        outgoing.name if outgoing is not None else "",
        "" if evicting_only else incoming.name,
        outcome,
        total_ms / 1000,
        {column.removesuffix("_ms"): ms / 1000 for column, ms in record.early_phases.items()},
        active_s,
    )


def _log_outcome(
    fields: dict[str, Any],
    outcome: str,
    result: SwitchResult,
    *,
    total_ms: float,
    evicting_only: bool,
) -> None:
    """The switch's closing events: escalated, failed, or the model active."""
    if result.escalated:
        event(
            log,
            "eviction_escalated",
            f"eviction of {fields['outgoing']} escalated to stop: {result.error}",
            level=logging.WARNING,
            **fields,
            error=result.error,
        )
    if outcome == "failed":
        event(
            log,
            "switch_failed",
            f"switch to {fields['model']} failed: {result.error}",
            level=logging.WARNING,
            **fields,
            error=result.error,
        )
    elif not evicting_only and outcome == "succeeded":
        bringup = result.bringup.value if result.bringup else None
        event(
            log,
            "model_activated",
            f"{fields['model']} active ({bringup}, {total_ms:.0f} ms)",
            **fields,
            bringup=bringup,
        )
