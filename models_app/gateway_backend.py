"""The gateway's view of llmux inside one web process.

The hot path (model active, not draining) touches no database: routes and engine states
are cached here and refreshed by one background task. Waiting demand and drain
acknowledgements are reported to the database by that same task, coalesced, so a burst of
requests costs a handful of writes, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError

from llmux_site.gateway.backend import Route
from llmux_site.gateway.errors import GatewayError
from models_app import selectors
from models_app.models import EngineState, Mode, ModelDefinition, SwapTrigger, SwitchStatus
from models_app.services import notify, presence, reconcile, switching

log = logging.getLogger(__name__)

CLOSED_WITHOUT_FAILURE = (SwitchStatus.SUCCEEDED, SwitchStatus.SKIPPED)
FAST_POLL = 0.02  # while requests wait or a drain is pending
IDLE_POLL = 0.25
REGISTRY_POLL = 0.25
HEARTBEAT = 1.0


@dataclass
class _Slot:
    route: Route
    backend: DjangoGatewayBackend
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.backend._release(self.route.model)


@dataclass
class _Waiters:
    count: int = 0
    since: float = 0.0
    switch_id: int | None = None
    switch_outcome: tuple[str, str] | None = None


@dataclass
class DjangoGatewayBackend:
    """GatewayBackend for llmux: waits for switches, counts in-flight, acknowledges drains."""

    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    registry: selectors.GatewayRegistry | None = None
    states: dict[str, tuple[str, int]] = field(default_factory=dict)
    in_flight: Counter[str] = field(default_factory=Counter)
    waiters: dict[str, _Waiters] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    # Replaced on every notification, so a waiter that looked at the state and then waits
    # on the event it grabbed before looking can never miss a change (no lost wake-ups).
    _event: asyncio.Event = field(default_factory=asyncio.Event)
    dirty: bool = True
    _wake: asyncio.Event = field(default_factory=asyncio.Event)  # run the refresher now
    _task: asyncio.Task[None] | None = None
    _db: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "llmux-gw-db"))

    @classmethod
    def create(cls) -> DjangoGatewayBackend:
        """Build with the registry loaded now (sync, at import of the ASGI module)."""
        backend = cls()
        try:
            backend.registry = selectors.gateway_registry()
            backend.states = selectors.runtime_states()
        except DatabaseError:  # not migrated yet: the refresher loads it once it can
            log.warning("gateway: registry not readable yet; will retry")
        return backend

    # --- GatewayBackend -------------------------------------------------------------------
    def resolve(self, name: str) -> str | None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())
        return self.registry.names.get(name) if self.registry else None

    def request_timeout(self) -> float:
        return self.registry.request_timeout if self.registry else 300.0

    async def list_models(self) -> list[dict[str, Any]]:
        await self.start()
        assert self.registry is not None
        data = []
        for model in self.registry.models.values():
            state = self.states.get(model.name, (EngineState.NOT_STARTED, 0))[0]
            entry: dict[str, Any] = {
                "id": model.name,
                "object": "model",
                "owned_by": "llmux",
                "llmux": {"state": state, "enabled": model.enabled},
            }
            if model.max_model_len:
                entry["max_model_len"] = model.max_model_len
            data.append(entry)
        return data

    async def acquire(self, model: str, *, deadline: float) -> _Slot:
        await self.start()
        if self._admissible(model):
            return self._take(model)
        self._check_allowed(model)
        waiter = self.waiters.setdefault(model, _Waiters())
        if waiter.count == 0:
            waiter.since = time.time()
        waiter.count += 1
        self._mark_dirty()
        try:
            return await self._wait_for(model, waiter, deadline)
        finally:
            waiter.count -= 1
            if waiter.count == 0:
                self.waiters.pop(model, None)
            self._mark_dirty()

    async def upstream_failed(self, model: str) -> bool:
        """Confirm the engine is dead (recording it so); then a new acquire restarts it."""
        dead: bool = await self._run_db(reconcile.engine_unreachable, model)
        if dead:
            token = self.states.get(model, ("", 0))[1]
            self.states = {**self.states, model: (EngineState.FAILED, token)}
            self._notify()
        return dead

    # --- internals ------------------------------------------------------------------------
    def _admissible(self, model: str) -> bool:
        state = self.states.get(model)
        return state is not None and state[0] == EngineState.RUNNING

    def _take(self, model: str) -> _Slot:
        assert self.registry is not None
        self.in_flight[model] += 1
        return _Slot(route=self.registry.models[model].route, backend=self)

    def _release(self, model: str) -> None:
        self.in_flight[model] -= 1
        if self.in_flight[model] <= 0:
            del self.in_flight[model]
            token = self.states.get(model, ("", 0))[1]
            if token > self.acked.get(model, -1):
                self._mark_dirty()  # a drain waits on us: acknowledge promptly

    def _check_allowed(self, model: str) -> None:
        assert self.registry is not None
        spec = self.registry.models[model]
        if not spec.enabled:
            raise GatewayError(503, f"Model `{model}` is disabled.")
        if self.registry.mode == Mode.MANUAL and model != self.registry.pinned:
            raise GatewayError(
                503,
                f"llmux is in manual mode serving {self.registry.pinned or 'no model'}; "
                f"model `{model}` is not switched in automatically.",
            )

    async def _wait_for(self, model: str, waiter: _Waiters, deadline: float) -> _Slot:
        while True:
            changed = self._event
            if self._admissible(model):
                return self._take(model)
            outcome = waiter.switch_outcome
            if outcome and outcome[0] == SwitchStatus.FAILED:
                raise GatewayError.switch_failed(model, outcome[1])
            finished = outcome is not None and outcome[0] in CLOSED_WITHOUT_FAILURE
            if waiter.switch_id is None or finished:
                # Report the demand first: the switch skips itself when nobody waits.
                await self._report()
                waiter.switch_outcome = None
                waiter.switch_id = await self._run_db(self._request_switch, model)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GatewayError.timed_out(model, self.request_timeout())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, 1.0))

    @staticmethod
    def _request_switch(model: str) -> int:
        definition = ModelDefinition.objects.get(name=model)
        return switching.request_switch(definition, trigger=SwapTrigger.REQUEST).pk

    def _mark_dirty(self) -> None:
        self.dirty = True
        self._wake.set()

    def _notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def _run_db(self, func: Any, *args: Any) -> Any:
        return await sync_to_async(func, thread_sensitive=False, executor=self._db)(*args)

    async def start(self) -> None:
        if self.registry is None:
            self.registry = await self._run_db(selectors.gateway_registry)
            self.states = await self._run_db(selectors.runtime_states)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._run_db(presence.forget, self.instance_id)

    async def _refresh_forever(self) -> None:
        last_registry = last_report = 0.0
        # Workers publish "look now" on this host's bus after each state change, so a
        # drain or an activation is seen at once; the poll below is the fallback.
        listener = await notify.bus().listen(lambda _message: self._wake.set())
        try:
            await self._refresh_loop(last_registry, last_report)
        finally:
            listener.close()

    async def _refresh_loop(self, last_registry: float, last_report: float) -> None:
        while True:
            try:
                now = time.monotonic()
                if now - last_registry >= REGISTRY_POLL:
                    last_registry = now
                    await self._refresh_registry()
                await self._refresh_states()
                if self.dirty or now - last_report >= HEARTBEAT:
                    last_report = now
                    await self._report()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive a database hiccup
                log.exception("gateway state refresh failed")
            busy = self.waiters or self._pending_drains()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FAST_POLL if busy else IDLE_POLL)

    async def _refresh_registry(self) -> None:
        fingerprint = await self._run_db(selectors.registry_fingerprint)
        if self.registry is None or fingerprint != self.registry.fingerprint:
            self.registry = await self._run_db(selectors.gateway_registry)

    async def _refresh_states(self) -> None:
        states = await self._run_db(selectors.runtime_states)
        ids = [w.switch_id for w in self.waiters.values() if w.switch_id is not None]
        outcomes = await self._run_db(selectors.switch_outcomes, ids) if ids else {}
        for waiter in self.waiters.values():
            if waiter.switch_id in outcomes:
                waiter.switch_outcome = outcomes[waiter.switch_id]
        if states != self.states or outcomes:
            self.states = states
            self._notify()
        if self._pending_drains():
            self.dirty = True

    def _pending_drains(self) -> list[str]:
        return [
            name
            for name, (_, token) in self.states.items()
            if token > self.acked.get(name, -1) and self.in_flight.get(name, 0) == 0
        ]

    async def _report(self) -> None:
        for name in self._pending_drains():
            self.acked[name] = self.states[name][1]
        self.dirty = False
        waiting = {name: (w.count, w.since) for name, w in self.waiters.items() if w.count}
        in_flight = dict(self.in_flight)  # copied here: the lambda runs in another thread
        await self._run_db(
            lambda: presence.report(
                self.instance_id,
                pid=os.getpid(),
                waiting=waiting,
                drained=dict(self.acked),
                in_flight=in_flight,
            )
        )
