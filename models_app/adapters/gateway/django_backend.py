"""`DjangoGatewayBackend`: llmux's `GatewayBackend` (`llmux_site/gateway/backend.py`).

The hot path (model active, not draining) touches no database: routes and engine states
are cached and refreshed by one background task, which also reports waiting demand and
drain acknowledgements to the database, coalesced, so a burst of requests costs a handful
of writes, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from llmux_site.core.addresses import ListenAddress
from models_app import metrics, protocol, selectors
from models_app.adapters.gateway.admission import Admission, Slot
from models_app.adapters.gateway.db_thread import DbThread, stop_task
from models_app.adapters.gateway.engine_states import EngineStateCache
from models_app.adapters.gateway.key_table import GatewayKeys
from models_app.adapters.gateway.presence_report import PresenceReport
from models_app.adapters.gateway.registry_cache import RegistryCache
from models_app.models import EngineState
from models_app.services import reconcile

log = logging.getLogger(__name__)

# The host bus brings engine states and registry changes at once; these polls only catch
# what it cannot (a message lost to a full socket buffer, a change made by raw SQL).
FAST_POLL = 0.1  # while requests wait or a drain is pending
IDLE_POLL = 0.25


@dataclass
class DjangoGatewayBackend:
    """GatewayBackend for llmux: waits for switches, counts in-flight, acknowledges drains."""

    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    keys: GatewayKeys | None = None  # API keys: reloaded with the registry, usage flushed
    db: DbThread = field(default_factory=DbThread)
    registry: RegistryCache = field(init=False)
    engines: EngineStateCache = field(default_factory=EngineStateCache)
    presence: PresenceReport = field(init=False)
    admission: Admission = field(init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)  # run the refresher now
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.registry = RegistryCache(self.keys)
        self.presence = PresenceReport(self.instance_id, self.engines, self.registry, self._wake)
        self.admission = Admission(self.registry, self.engines, self.presence, self.db)

    @property
    def close_upstream(self) -> Callable[[ListenAddress], Awaitable[None]] | None:
        """Closes this process's connections to an engine (the gateway's
        `UpstreamPool.close`), awaited before a drain is acknowledged."""
        return self.presence.close_upstream

    @close_upstream.setter
    def close_upstream(self, close: Callable[[ListenAddress], Awaitable[None]] | None) -> None:
        self.presence.close_upstream = close

    @classmethod
    def create(cls, keys: GatewayKeys | None = None) -> DjangoGatewayBackend:
        """Build with the registry loaded now (sync, at import of the ASGI module)."""
        backend = cls(keys=keys)
        try:
            backend.registry.load_now()
            backend._merge(selectors.runtime_states())
        except DatabaseError:  # not migrated yet: the refresher loads it once it can
            log.warning("gateway: registry not readable yet; will retry")
        return backend

    # --- GatewayBackend ---------------------------------------------------------------------
    def resolve(self, name: str) -> str | None:
        self._start_refresher()
        return self.registry.resolve(name)

    def request_timeout(self) -> float:
        return self.registry.request_timeout()

    async def list_models(self) -> list[dict[str, Any]]:
        await self.start()
        return [self._model_entry(model) for model in self.registry.current().models.values()]

    def _model_entry(self, model: selectors.GatewayModel) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": model.name,
            "object": "model",
            "created": model.created,
            "owned_by": "llmux",
            "llmux": {"state": self.engines.state_of(model.name), "enabled": model.enabled},
        }
        if model.max_model_len:
            entry["max_model_len"] = model.max_model_len
        return entry

    async def acquire(self, model: str, *, deadline: float) -> Slot:
        started = time.monotonic()
        try:
            await self.start()
            slot = await self.admission.acquire(model, deadline=deadline)
        finally:
            waited = time.monotonic() - started
            metrics.note_request_wait(waited)  # a 504 after a long wait waited too
        metrics.observe_queue_wait(model, waited)
        return slot

    async def upstream_failed(self, model: str) -> bool:
        """Confirm the engine is dead (recording it so); then a new acquire restarts it."""
        dead = await self.db.run(reconcile.engine_unreachable, model)
        if dead:
            self.engines.mark_failed(model)
            self.admission.wake_waiters()
        return dead

    # --- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if not self.registry.loaded:
            await self.registry.load(self.db)
            self._merge(await self.db.run(selectors.runtime_states))
        self._start_refresher()

    def _start_refresher(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            await self.presence.forget(self.db)
        with contextlib.suppress(Exception):  # the usage not written yet
            await self.registry.flush_keys(self.db)

    # --- the refresher ----------------------------------------------------------------------
    async def _refresh_forever(self) -> None:
        # Workers publish "look now" on this host's bus after each state change, so a
        # drain or an activation is seen at once; the poll below is the fallback.
        listener = await protocol.bus().listen(self._on_message)
        try:
            while True:
                await self._refresh_pass()
        finally:
            listener.close()

    async def _refresh_pass(self) -> None:
        # Cleared before looking, never after: a "look now" that arrives while this pass
        # reads the database must trigger another pass, not be swallowed.
        self._wake.clear()
        try:
            now = time.monotonic()
            await self.registry.refresh(self.db, now)
            await self._refresh_states()
            if self.presence.report_due(now):
                await self.presence.report(self.db, self.admission)
        except asyncio.CancelledError:
            raise
        except Exception:  # the loop must survive a database hiccup
            log.exception("gateway state refresh failed")
        busy = self.admission.waiters or self.presence.pending_drains(self.admission)
        with contextlib.suppress(TimeoutError):
            # Not wait_for: on Python 3.11 it can swallow a cancellation that lands as the
            # event is set, and aclose would wait for this loop forever.
            async with asyncio.timeout(FAST_POLL if busy else IDLE_POLL):
                await self._wake.wait()

    async def _refresh_states(self) -> None:
        changed = self._merge(await self.db.run(selectors.runtime_states))
        outcomes = await self.admission.refresh_outcomes()
        if changed or outcomes:
            self.admission.wake_waiters()
            self.presence.announce_drains(self.admission)
        self.presence.note_pending_drains(self.admission)

    def _on_message(self, data: bytes) -> None:
        message = protocol.read(data)
        if isinstance(message, protocol.RegistryChanged):
            self.registry.mark_stale()
            self._wake.set()
        elif isinstance(message, protocol.Probing):
            self.engines.probing_started(message.model, message.version)
            self.admission.wake_waiters()  # waiters for it may go now
        elif isinstance(message, protocol.EngineStates):
            self._apply_pushed(message.states)  # the committed states: no read needed
            if any(self.engines.state_of(n) == EngineState.FAILED for n in self.admission.waiters):
                self._wake.set()  # a waiter's switch may have failed: read its outcome
        elif message is None:
            self._wake.set()  # a notice we cannot read: the database says what changed
        # Demand, queue and drain news are for workers.

    def _apply_pushed(self, states: Mapping[str, protocol.CommittedState]) -> None:
        """Take committed engine states from a bus notice, without a database read."""
        if self._merge(states):
            self.admission.wake_waiters()
            self.presence.announce_drains(self.admission)

    def _merge(self, rows: Mapping[str, protocol.CommittedState]) -> bool:
        """Cache the rows newer than the cache's; True if a state changed."""
        merged = self.engines.merge(rows)
        for name, state in merged.taken.items():
            self.admission.settle_early(name, state)
        return merged.changed
