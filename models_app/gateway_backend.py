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
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, transaction

from llmux_site.core.addresses import ListenAddress
from llmux_site.gateway.backend import Route
from llmux_site.gateway.errors import GatewayError
from llmux_site.logs import event
from models_app import metrics, protocol, selectors
from models_app.models import EngineState, Mode, ModelDefinition, SwapTrigger, SwitchStatus
from models_app.services import presence, reconcile, switch_queue
from models_app.services.api_keys import GatewayKeys

log = logging.getLogger(__name__)

CLOSED_WITHOUT_FAILURE = (SwitchStatus.SUCCEEDED, SwitchStatus.SKIPPED)
# The host bus brings engine states and registry changes at once; these polls only catch
# what it cannot (a message lost to a full socket buffer, a change made by raw SQL).
FAST_POLL = 0.1  # while requests wait or a drain is pending
IDLE_POLL = 0.25
REGISTRY_POLL = 1.0
KEYS_POLL = 10.0  # the key table's fallback re-read (notices and first use come first)
HEARTBEAT = 1.0
OUTCOME_WAIT = 2.0  # how long a failed early start waits for its switch's reason


@dataclass(eq=False)
class _Slot:
    route: Route
    backend: DjangoGatewayBackend
    released: bool = False
    # An early slot (taken while the engine is probed): the switch bringing it up and
    # the request's deadline; `started` says how that switch ended (None: not yet).
    switch_id: int | None = None
    deadline: float = 0.0
    started: bool | None = None

    async def confirmed(self) -> None:
        if self.switch_id is not None and self.started is not True:
            await self.backend._confirm(self)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.backend._release(self.route.model)
            self.backend.early.get(self.route.model, set()).discard(self)


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
    announced: dict[str, int] = field(default_factory=dict)  # drain acks sent on the bus
    # Row version of each cached state: a bus notice or a read older than what the cache
    # holds is ignored (notices and reads can arrive in either order).
    versions: dict[str, int] = field(default_factory=dict)
    probing: dict[str, int] = field(default_factory=dict)  # model -> version being probed
    early: dict[str, set[_Slot]] = field(default_factory=dict)  # slots awaiting their start
    _registry_stale: bool = False  # the bus said the registry changed
    keys: GatewayKeys | None = None  # API keys: reloaded with the registry, usage flushed
    _keys_stale: bool = False
    _keys_read_at: float = 0.0
    # Replaced on every notification, so a waiter that looked at the state and then waits
    # on the event it grabbed before looking can never miss a change (no lost wake-ups).
    _event: asyncio.Event = field(default_factory=asyncio.Event)
    dirty: bool = True
    _wake: asyncio.Event = field(default_factory=asyncio.Event)  # run the refresher now
    _task: asyncio.Task[None] | None = None
    _db: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "llmux-gw-db"))
    # Closes this process's connections to an engine (the gateway's UpstreamPool.close):
    # awaited before a drain is acknowledged, since CRIU cannot dump an engine while another
    # process holds one end of a connection to it ("half of stream unix connection").
    close_upstream: Callable[[ListenAddress], Awaitable[None]] | None = None
    _acks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def create(cls, keys: GatewayKeys | None = None) -> DjangoGatewayBackend:
        """Build with the registry loaded now (sync, at import of the ASGI module)."""
        backend = cls()
        backend.keys = keys
        try:
            backend.registry = selectors.gateway_registry()
            backend._merge(selectors.runtime_states())
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
                "created": model.created,
                "owned_by": "llmux",
                "llmux": {"state": state, "enabled": model.enabled},
            }
            if model.max_model_len:
                entry["max_model_len"] = model.max_model_len
            data.append(entry)
        return data

    async def acquire(self, model: str, *, deadline: float) -> _Slot:
        started = time.monotonic()
        slot = await self._acquire(model, deadline=deadline)
        metrics.QUEUE_WAIT_SECONDS.labels(model).observe(time.monotonic() - started)
        return slot

    async def _acquire(self, model: str, *, deadline: float) -> _Slot:
        await self.start()
        if self._admissible(model):
            return self._take(model)
        self._check_allowed(model)
        waiter = self.waiters.setdefault(model, _Waiters())
        if waiter.count == 0:
            waiter.since = time.time()
        waiter.count += 1
        if waiter.switch_id is not None:
            # Joining waiters: the demand grew (policies weigh it). A first waiter's demand
            # goes with its switch request instead, one write rather than two in a row.
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
    def _timed_out(self, model: str) -> GatewayError:
        """The 504 of a request whose model was not ready in time (and its log event)."""
        timeout = self.request_timeout()
        event(
            log,
            "request_timeout",
            f"a request for {model} timed out after {timeout:g} s",
            level=logging.WARNING,
            model=model,
            timeout_s=timeout,
        )
        return GatewayError.timed_out(model, timeout)

    def _admissible(self, model: str) -> bool:
        state = self.states.get(model)
        return state is not None and state[0] == EngineState.RUNNING

    def _early_admissible(self, model: str) -> bool:
        """The model's engine is being probed, by the start the cache knows of."""
        state = self.states.get(model)
        return (
            state is not None
            and state[0] == EngineState.STARTING
            and self.probing.get(model, -1) == self.versions.get(model)
        )

    def _take(self, model: str, *, switch_id: int | None = None, deadline: float = 0.0) -> _Slot:
        assert self.registry is not None
        self.in_flight[model] += 1
        route = self.registry.models[model].route
        slot = _Slot(route, self, switch_id=switch_id, deadline=deadline)
        if switch_id is not None:
            self.early.setdefault(model, set()).add(slot)
        return slot

    async def _confirm(self, slot: _Slot) -> None:
        """Wait until an early slot's engine is running; raise if its start failed."""
        model = slot.route.model
        while slot.started is None:
            changed = self._event
            remaining = slot.deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out(model)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await changed.wait()
        if not slot.started:
            raise GatewayError.switch_failed(model, await self._failure_reason(slot))

    async def _failure_reason(self, slot: _Slot) -> str:
        """Why the switch of an early slot failed (its row is closed just after the state)."""
        assert slot.switch_id is not None
        until = time.monotonic() + OUTCOME_WAIT
        while True:
            outcomes = await self._run_db(selectors.switch_outcomes, [slot.switch_id])
            status, error = outcomes.get(slot.switch_id, ("", ""))
            if status == SwitchStatus.FAILED and error:
                return str(error)
            if status in CLOSED_WITHOUT_FAILURE or time.monotonic() >= until:
                return "the engine did not become ready"
            await asyncio.sleep(0.02)

    def _settle_early(self, model: str, state: str) -> None:
        """Early slots learn how the start ended: running, or anything but starting."""
        if state == EngineState.STARTING:
            return
        for slot in self.early.pop(model, set()):
            slot.started = state == EngineState.RUNNING

    def _release(self, model: str) -> None:
        self.in_flight[model] -= 1
        if self.in_flight[model] <= 0:
            del self.in_flight[model]
            token = self.states.get(model, ("", 0))[1]
            if token > self.acked.get(model, -1):
                # A drain waits on us: acknowledge on the bus at once; the row follows at
                # the refresher's next pass (not now: the worker is evicting meanwhile).
                self._announce_drains()
                self.dirty = True

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
            if waiter.switch_id is not None and self._early_admissible(model):
                # Sent now, answered once the probe passed (the relay holds it till then).
                return self._take(model, switch_id=waiter.switch_id, deadline=deadline)
            outcome = waiter.switch_outcome
            if outcome and outcome[0] == SwitchStatus.FAILED:
                raise GatewayError.switch_failed(model, outcome[1])
            finished = outcome is not None and outcome[0] in CLOSED_WITHOUT_FAILURE
            if waiter.switch_id is None or finished:
                waiter.switch_outcome = None
                assert self.registry is not None
                spec = self.registry.models[model]
                # A lingering worker reads the group's state while we write the request.
                protocol.publish(protocol.Wanted(spec.group, spec.pk))
                waiter.switch_id = await self._run_db(
                    self._request_switch, spec.pk, model, spec.group, self._presence_snapshot()
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out(model)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await changed.wait()

    @staticmethod
    def _request_switch(pk: int, model: str, group: str, snapshot: dict[str, Any]) -> int:
        # The demand is reported in the same transaction (a switch skips itself when
        # nobody waits, so it must never be visible without it) and costs no extra commit.
        with transaction.atomic():
            presence.report(**snapshot)
            # The cached pk and group save two reads; a model deleted since fails the
            # insert (foreign key) like a read would have.
            definition = ModelDefinition(pk=pk, name=model)
            request = switch_queue.request_switch(
                definition, trigger=SwapTrigger.REQUEST, group=group
            )
        return request.pk

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
            self._merge(await self._run_db(selectors.runtime_states))
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
        if self.keys is not None:  # the usage not written yet
            with contextlib.suppress(Exception):
                await self._run_db(self.keys.flush)

    async def _refresh_forever(self) -> None:
        last_registry = last_report = 0.0
        # Workers publish "look now" on this host's bus after each state change, so a
        # drain or an activation is seen at once; the poll below is the fallback.
        listener = await protocol.bus().listen(self._on_message)
        try:
            await self._refresh_loop(last_registry, last_report)
        finally:
            listener.close()

    async def _refresh_loop(self, last_registry: float, last_report: float) -> None:
        while True:
            # Cleared before looking, never after: a "look now" that arrives while this
            # pass reads the database must trigger another pass, not be swallowed.
            self._wake.clear()
            try:
                now = time.monotonic()
                if self._registry_stale or now - last_registry >= REGISTRY_POLL:
                    self._registry_stale = False
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
            with contextlib.suppress(TimeoutError):
                # Not wait_for: on Python 3.11 it can swallow a cancellation that lands
                # as the event is set, and aclose would wait for this loop forever.
                async with asyncio.timeout(FAST_POLL if busy else IDLE_POLL):
                    await self._wake.wait()

    def _on_message(self, data: bytes) -> None:
        message = protocol.read(data)
        if isinstance(message, protocol.RegistryChanged):
            self._registry_stale = True
            self._keys_stale = True
            self._wake.set()
            return
        if isinstance(message, protocol.Probing):
            self.probing[message.model] = message.version
            self._notify()  # waiters for it may go now
            return
        if isinstance(message, protocol.EngineStates):
            self._apply_pushed(message.states)  # the committed states: no read needed
            if any(self.states.get(name, ("",))[0] == EngineState.FAILED for name in self.waiters):
                self._wake.set()  # a waiter's switch may have failed: read its outcome
        elif message is None:
            self._wake.set()  # a notice we cannot read: the database says what changed
        # Demand, queue and drain news are for workers.

    def _apply_pushed(self, states: Mapping[str, protocol.CommittedState]) -> None:
        """Take committed engine states from a bus notice, without a database read."""
        if self._merge(states):
            self._notify()
            self._announce_drains()

    def _merge(self, rows: Mapping[str, tuple[str, int, int]]) -> bool:
        """Cache every row at least as new as the cached one; True if a state changed."""
        states = dict(self.states)
        for name, (state, token, version) in rows.items():
            if version >= self.versions.get(name, -1):
                self.versions[name] = version
                states[name] = (state, token)
                self._settle_early(name, state)
        changed = states != self.states
        self.states = states
        return changed

    def _announce_drains(self) -> None:
        """Acknowledge drains we have nothing in flight for on the bus (the row follows)."""
        for name in self._pending_drains():
            state, token = self.states[name]
            if state != EngineState.DRAINING:
                continue  # a worker waits only for the token of a drain it raised
            if self.announced.get(name, -1) < token:
                self.announced[name] = token
                ack = asyncio.ensure_future(self._acknowledge_drain(name, token))
                self._acks.add(ack)
                ack.add_done_callback(self._acks.discard)
                self.dirty = True

    async def _acknowledge_drain(self, name: str, token: int) -> None:
        """Tell the worker this process is drained, once it holds no connection to the
        engine (closing idle ones takes well under a millisecond)."""
        model = self.registry.models.get(name) if self.registry is not None else None
        if self.close_upstream is not None and model is not None:
            with contextlib.suppress(Exception):  # never keep a worker waiting on us
                await self.close_upstream(model.route.upstream)
        protocol.publish(protocol.Drained(self.instance_id, name, token))

    async def _refresh_registry(self) -> None:
        fingerprint = await self._run_db(selectors.registry_fingerprint)
        if self.registry is None or fingerprint != self.registry.fingerprint:
            self.registry = await self._run_db(selectors.gateway_registry)
        if self.keys is not None:
            # Off the switch path: a key made elsewhere arrives with a registry notice (or
            # at its first use, GatewayKeys.identify), so the table is re-read only then or
            # every KEYS_POLL; usage is written only when some was gathered.
            now = time.monotonic()
            if self._keys_stale or now - self._keys_read_at >= KEYS_POLL:
                self._keys_stale, self._keys_read_at = False, now
                await self._run_db(self.keys.reload)
            if self.keys.pending():
                await self._run_db(self.keys.flush)

    async def _refresh_states(self) -> None:
        changed = self._merge(await self._run_db(selectors.runtime_states))
        ids = [w.switch_id for w in self.waiters.values() if w.switch_id is not None]
        outcomes = await self._run_db(selectors.switch_outcomes, ids) if ids else {}
        for waiter in self.waiters.values():
            if waiter.switch_id in outcomes:
                waiter.switch_outcome = outcomes[waiter.switch_id]
        if changed or outcomes:
            self._notify()
            self._announce_drains()
        if self._pending_drains():
            self.dirty = True

    def _pending_drains(self) -> list[str]:
        return [
            name
            for name, (_, token) in self.states.items()
            if token > self.acked.get(name, -1) and self.in_flight.get(name, 0) == 0
        ]

    async def _report(self) -> None:
        snapshot = self._presence_snapshot()
        await self._run_db(lambda: presence.report(**snapshot))

    def _presence_snapshot(self) -> dict[str, Any]:
        """This process's demand and drain acks, copied (they are written in a thread)."""
        for name in self._pending_drains():
            self.acked[name] = self.states[name][1]
        self.dirty = False
        return {
            "instance_id": self.instance_id,
            "pid": os.getpid(),
            "waiting": {name: (w.count, w.since) for name, w in self.waiters.items() if w.count},
            "drained": dict(self.acked),
            "in_flight": dict(self.in_flight),
        }
