"""What a web process tells the workers: its waiting demand and drain acknowledgements.

Drain acknowledgements go on the bus at once; the process's `WebInstance` row (demand,
acknowledgements, in-flight counts, heartbeat) is written by the backend's refresher, at
most once a pass, never by a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from llmux_site.core.addresses import ListenAddress
from models_app import protocol
from models_app.adapters.gateway.db_thread import DbThread
from models_app.adapters.gateway.engine_states import EngineStateCache
from models_app.adapters.gateway.registry_cache import RegistryCache
from models_app.models import EngineState
from models_app.services import presence

HEARTBEAT = 1.0  # seconds between rows written while nothing changes


class Demand(Protocol):
    """The counts a presence report carries (the admission keeps them)."""

    def waiting(self) -> dict[str, tuple[int, float]]:
        """Model -> (requests waiting, since when), for models some request waits for."""
        ...

    def in_flight_of(self, model: str) -> int: ...

    def in_flight_counts(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class PresenceSnapshot:
    """One report, copied on the event loop (it is written from the database thread)."""

    instance_id: str
    pid: int
    waiting: dict[str, tuple[int, float]]
    drained: dict[str, int]
    in_flight: dict[str, int]

    def write(self) -> None:
        """Upsert the web process's row (sync: on the database thread)."""
        presence.report(
            self.instance_id,
            pid=self.pid,
            waiting=self.waiting,
            drained=self.drained,
            in_flight=self.in_flight,
        )


@dataclass
class PresenceReport:
    """Drain acknowledgements on the bus, and the row that reports demand and drains."""

    instance_id: str
    states: EngineStateCache
    registry: RegistryCache
    wake_refresher: asyncio.Event  # set: the refresher runs a pass now
    # Closes this process's connections to an engine (the gateway's UpstreamPool.close):
    # awaited before a drain is acknowledged, since CRIU cannot dump an engine while another
    # process holds one end of a connection to it ("half of stream unix connection").
    close_upstream: Callable[[ListenAddress], Awaitable[None]] | None = None
    acked: dict[str, int] = field(default_factory=dict)  # drain tokens written to the row
    announced: dict[str, int] = field(default_factory=dict)  # drain acks sent on the bus
    dirty: bool = True  # the row is behind: write it at the next pass
    _reported_at: float = 0.0
    _acks: set[asyncio.Task[None]] = field(default_factory=set)

    def mark_dirty(self) -> None:
        """The demand changed: the refresher writes the row at once."""
        self.dirty = True
        self.wake_refresher.set()

    def pending_drains(self, demand: Demand) -> list[str]:
        """Models with a drain token not yet in the row and nothing in flight here."""
        return [
            name
            for name, (_, token) in self.states.states.items()
            if token > self.acked.get(name, -1) and demand.in_flight_of(name) == 0
        ]

    def note_pending_drains(self, demand: Demand) -> None:
        if self.pending_drains(demand):
            self.dirty = True

    def idle(self, model: str, demand: Demand) -> None:
        """The last request in flight for `model` ended here."""
        if self.states.drain_token(model) > self.acked.get(model, -1):
            # A drain waits on us: acknowledge on the bus at once; the row follows at the
            # refresher's next pass (not now: the worker is evicting meanwhile).
            self.announce_drains(demand)
            self.dirty = True

    def announce_drains(self, demand: Demand) -> None:
        """Acknowledge drains we have nothing in flight for on the bus (the row follows)."""
        for name in self.pending_drains(demand):
            state, token = self.states.states[name]
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
        model = self.registry.model(name)
        if self.close_upstream is not None and model is not None:
            with contextlib.suppress(Exception):  # never keep a worker waiting on us
                await self.close_upstream(model.route.upstream)
        protocol.publish(protocol.Drained(self.instance_id, name, token))

    def snapshot(self, demand: Demand) -> PresenceSnapshot:
        """This process's demand and drain acks, to be written (the row catches up)."""
        for name in self.pending_drains(demand):
            self.acked[name] = self.states.states[name].drain_token
        self.dirty = False
        return PresenceSnapshot(
            instance_id=self.instance_id,
            pid=os.getpid(),
            waiting=demand.waiting(),
            drained=dict(self.acked),
            in_flight=demand.in_flight_counts(),
        )

    def report_due(self, now: float) -> bool:
        """Whether the refresher's pass writes the row: when something changed, or a
        heartbeat is due; requests never write it themselves (coalesced writes).

        Why: a burst of requests then costs a handful of writes, not one each. The gateway
        spends 513 µs of CPU per request at 1,214 req/s with 32 clients (docs/PERFORMANCE.md,
        Gateway), and one ORM statement costs 0.6 to 0.9 ms here (docs/SWITCHING.md): a
        write per request would more than double a request's cost.
        """
        if self.dirty or now - self._reported_at >= HEARTBEAT:
            self._reported_at = now
            return True
        return False

    async def report(self, db: DbThread, demand: Demand) -> None:
        await db.run(self.snapshot(demand).write)

    async def forget(self, db: DbThread) -> None:
        """Remove the row (at shutdown): workers stop waiting for this process."""
        await db.run(presence.forget, self.instance_id)
