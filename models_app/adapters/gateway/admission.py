"""Which requests may go to their engine now, and what the others wait for.

A request for a running model takes a slot at once. The others wait: the first one for a
model queues its switch, and all of them go once the engine runs (or, with an early slot,
once it is being probed), fail with their switch, or time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from django.db import transaction

from llmux_site.gateway.backend import Route
from llmux_site.gateway.errors import GatewayError
from llmux_site.logs import event
from models_app import protocol, selectors
from models_app.adapters.gateway.db_thread import DbThread
from models_app.adapters.gateway.engine_states import EngineStateCache
from models_app.adapters.gateway.presence_report import PresenceReport, PresenceSnapshot
from models_app.adapters.gateway.registry_cache import RegistryCache
from models_app.models import EngineState, Mode, ModelDefinition, SwapTrigger, SwitchStatus
from models_app.services import switch_queue

log = logging.getLogger(__name__)

CLOSED_WITHOUT_FAILURE = (SwitchStatus.SUCCEEDED, SwitchStatus.SKIPPED)
OUTCOME_WAIT = 2.0  # how long a failed early start waits for its switch's reason
WAIT_SLICE = 1.0  # a waiter looks again at least this often, notice or not


@dataclass(eq=False)
class Slot:
    """One admitted request (`llmux_site.gateway.backend.Slot`): counted in flight until
    released."""

    route: Route
    admission: Admission
    released: bool = False
    # An early slot (taken while the engine is probed): the switch bringing it up and
    # the request's deadline; `started` says how that switch ended (None: not yet).
    switch_id: int | None = None
    deadline: float = 0.0
    started: bool | None = None

    async def confirmed(self) -> None:
        if self.switch_id is not None and self.started is not True:
            await self.admission.confirm(self)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission.release(self)


@dataclass
class Waiters:
    """The requests of this process waiting for one model, and the switch they wait on."""

    count: int = 0
    since: float = 0.0  # when the first of them started waiting (Unix seconds)
    switch_id: int | None = None
    switch_outcome: selectors.OperationOutcome | None = None


def queue_switch(model: selectors.GatewayModel, snapshot: PresenceSnapshot) -> int:
    """Queue a request-triggered switch to `model` (sync); the id of its SwitchRequest."""
    # The demand is reported in the same transaction (a switch skips itself when nobody
    # waits, so it must never be visible without it) and costs no extra commit.
    with transaction.atomic():
        snapshot.write()
        # The cached pk and group save two reads; a model deleted since fails the insert
        # (foreign key) like a read would have.
        definition = ModelDefinition(pk=model.pk, name=model.name)
        request = switch_queue.request_switch(
            definition, trigger=SwapTrigger.REQUEST, group=model.group
        )
    return request.pk


@dataclass
class Admission:
    """Slots, waiters and the in-flight counts of one web process."""

    registry: RegistryCache
    engines: EngineStateCache
    presence: PresenceReport
    db: DbThread
    in_flight: Counter[str] = field(default_factory=Counter)
    waiters: dict[str, Waiters] = field(default_factory=dict)
    early: dict[str, set[Slot]] = field(default_factory=dict)  # slots awaiting their start
    # Replaced on every notification, so a waiter that looked at the state and then waits
    # on the event it grabbed before looking can never miss a change (no lost wake-ups).
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    # --- the demand a presence report carries ---------------------------------------------
    def waiting(self) -> dict[str, tuple[int, float]]:
        return {name: (w.count, w.since) for name, w in self.waiters.items() if w.count}

    def in_flight_of(self, model: str) -> int:
        return self.in_flight.get(model, 0)

    def in_flight_counts(self) -> dict[str, int]:
        return dict(self.in_flight)

    # --- admission --------------------------------------------------------------------------
    async def acquire(self, model: str, *, deadline: float) -> Slot:
        """A slot on `model`, at once or after its switch (the registry is loaded)."""
        if self.engines.admits(model):
            return self._take(model)
        self.registry.check_allowed(model)
        waiter = self._join(model)
        try:
            return await self._wait_for(model, waiter, deadline)
        finally:
            self._leave(model, waiter)

    def _join(self, model: str) -> Waiters:
        waiter = self.waiters.setdefault(model, Waiters())
        if waiter.count == 0:
            waiter.since = time.time()
        waiter.count += 1
        if waiter.switch_id is not None:
            # Joining waiters: the demand grew (policies weigh it). A first waiter's demand
            # goes with its switch request instead, one write rather than two in a row.
            self.presence.mark_dirty()
        return waiter

    def _leave(self, model: str, waiter: Waiters) -> None:
        waiter.count -= 1
        if waiter.count == 0:
            self.waiters.pop(model, None)
        self.presence.mark_dirty()

    async def _wait_for(self, model: str, waiter: Waiters, deadline: float) -> Slot:
        while True:
            changed = self._changed
            if self.engines.admits(model):
                return self._take(model)
            if waiter.switch_id is not None and self.engines.admits_early(model):
                # Sent now, answered once the probe passed (the relay holds it till then).
                return self._take(model, switch_id=waiter.switch_id, deadline=deadline)
            if self.registry.current().mode == Mode.MANUAL:
                await self._operator_brings_up(model)
            elif self._needs_switch(model, waiter):
                waiter.switch_id = await self._request_switch(model)
            await self._next_change(changed, model, deadline)

    async def _operator_brings_up(self, model: str) -> None:
        """Manual mode, where nothing switches automatically (llmux's rule): a request
        for the pinned model waits only while an operator's switch brings it up, and
        answers 503 like any other otherwise."""
        self.registry.check_allowed(model)  # the pin may have moved while it waited
        spec = self.registry.current().models[model]
        if not await self.db.run(selectors.bring_up_under_way, spec.pk):
            raise GatewayError(
                503,
                f"llmux is in manual mode and model `{model}` is not running; it is not "
                "switched in automatically (switch to it or pin it).",
            )

    def _needs_switch(self, model: str, waiter: Waiters) -> bool:
        """Whether the waiters must queue a switch: none yet, or theirs ended without
        bringing the model up. Raises the switch's 503 when it failed."""
        outcome = waiter.switch_outcome
        if outcome and outcome.status == SwitchStatus.FAILED:
            raise GatewayError.switch_failed(model, outcome.error)
        finished = outcome is not None and outcome.status in CLOSED_WITHOUT_FAILURE
        if waiter.switch_id is None or finished:
            waiter.switch_outcome = None
            return True
        return False

    async def _request_switch(self, model: str) -> int:
        spec = self.registry.current().models[model]
        # A lingering worker reads the group's state while we write the request.
        protocol.publish(protocol.Wanted(spec.group, spec.pk))
        return await self.db.run(queue_switch, spec, self.presence.snapshot(self))

    async def _next_change(self, changed: asyncio.Event, model: str, deadline: float) -> None:
        """Wait for `changed` (grabbed before looking) or a slice; 504 past `deadline`."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self.timed_out(model)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(remaining, WAIT_SLICE)):
                await changed.wait()

    def _take(self, model: str, *, switch_id: int | None = None, deadline: float = 0.0) -> Slot:
        self.in_flight[model] += 1
        route = self.registry.current().models[model].route
        slot = Slot(route, self, switch_id=switch_id, deadline=deadline)
        if switch_id is not None:
            self.early.setdefault(model, set()).add(slot)
        return slot

    def release(self, slot: Slot) -> None:
        """`slot`'s request ended (once per slot: `Slot.release` sees to it)."""
        model = slot.route.model
        self.early.get(model, set()).discard(slot)
        self.in_flight[model] -= 1
        if self.in_flight[model] <= 0:
            del self.in_flight[model]
            self.presence.idle(model, self)

    def timed_out(self, model: str) -> GatewayError:
        """The 504 of a request whose model was not ready in time (and its log event)."""
        timeout = self.registry.request_timeout()
        event(
            log,
            "request_timeout",
            f"a request for {model} timed out after {timeout:g} s",
            level=logging.WARNING,
            model=model,
            timeout_s=timeout,
        )
        return GatewayError.timed_out(model, timeout)

    # --- early slots --------------------------------------------------------------------------
    async def confirm(self, slot: Slot) -> None:
        """Wait until an early slot's engine is running; raise if its start failed."""
        model = slot.route.model
        while slot.started is None:
            await self._next_change(self._changed, model, slot.deadline)
        if not slot.started:
            raise GatewayError.switch_failed(model, await self._failure_reason(slot))

    async def _failure_reason(self, slot: Slot) -> str:
        """Why the switch of an early slot failed (its row is closed just after the state)."""
        assert slot.switch_id is not None
        until = time.monotonic() + OUTCOME_WAIT
        while True:
            outcomes = await self.db.run(selectors.switch_outcomes, [slot.switch_id])
            status, error = outcomes.get(slot.switch_id, ("", ""))
            if status == SwitchStatus.FAILED and error:
                return str(error)
            if status in CLOSED_WITHOUT_FAILURE or time.monotonic() >= until:
                return "the engine did not become ready"
            await asyncio.sleep(0.02)

    def settle_early(self, model: str, state: str) -> None:
        """Early slots learn how the start ended: running, or anything but starting."""
        if state == EngineState.STARTING:
            return
        for slot in self.early.pop(model, set()):
            slot.started = state == EngineState.RUNNING

    # --- what the refresher tells the waiters ----------------------------------------------
    async def refresh_outcomes(self) -> bool:
        """Read how the waiters' switches stand; True when some row was read."""
        ids = [w.switch_id for w in self.waiters.values() if w.switch_id is not None]
        outcomes = await self.db.run(selectors.switch_outcomes, ids) if ids else {}
        for waiter in self.waiters.values():
            if waiter.switch_id is not None and waiter.switch_id in outcomes:
                waiter.switch_outcome = outcomes[waiter.switch_id]
        return bool(outcomes)

    def wake_waiters(self) -> None:
        """Something a waiter looks at changed: every waiter looks again."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
